"""Models built in code, so everything runs offline: a tiny randomly initialised SD1.5-shaped model for tests,
and Stable Diffusion 1.5 (+ AnimateDiff v1-5-2) at full size with random weights for benchmarks.

Same component classes, the real SD1.5 tokenizer, an 8x VAE and cross-attention K/V layers named as in
SD1.5. Deterministic: the same seed gives bitwise the same weights.
"""

from __future__ import annotations

import tempfile
from importlib import resources
from pathlib import Path

import torch

from cdvideo.models.ip_adapter import cross_attention_shapes

TINY_ID = "tiny"
SD15_ID = "sd15-random"
CROSS_DIM = 32
BLOCKS = (16, 32)
LAYERS_PER_BLOCK = 1
_TEXT_IDS = dict(max_position_embeddings=77, bos_token_id=0, eos_token_id=2, pad_token_id=1)  # SD1.5's (eos 2 too)
SCHEDULER = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000,
                 clip_sample=False, steps_offset=1)

# Architectures of the models built in code: a tiny one for tests, and Stable Diffusion 1.5 with AnimateDiff's
# v1-5-2 motion adapter at full size (random weights: speed and memory do not depend on values).
ARCHITECTURES = {
    TINY_ID: {
        "unet": dict(block_out_channels=BLOCKS, layers_per_block=LAYERS_PER_BLOCK, sample_size=8, in_channels=4,
                     out_channels=4, cross_attention_dim=CROSS_DIM, attention_head_dim=8, norm_num_groups=8,
                     down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                     up_block_types=("UpBlock2D", "CrossAttnUpBlock2D")),
        "vae": dict(block_out_channels=(8, 8, 8, 8), in_channels=3, out_channels=3, latent_channels=4,
                    down_block_types=["DownEncoderBlock2D"] * 4, up_block_types=["UpDecoderBlock2D"] * 4,
                    norm_num_groups=2, sample_size=64),
        "text": dict(hidden_size=CROSS_DIM, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
                     projection_dim=CROSS_DIM, **_TEXT_IDS),
        "adapter": dict(block_out_channels=BLOCKS, motion_layers_per_block=LAYERS_PER_BLOCK,
                        motion_norm_num_groups=8, motion_num_attention_heads=2, motion_max_seq_length=32),
        "image_encoder": dict(image_size=32, patch_size=8, hidden_size=32, intermediate_size=37,
                              num_hidden_layers=2, num_attention_heads=4, projection_dim=16),
    },
    SD15_ID: {
        "unet": dict(block_out_channels=(320, 640, 1280, 1280), layers_per_block=2, sample_size=64, in_channels=4,
                     out_channels=4, cross_attention_dim=768, attention_head_dim=8, norm_num_groups=32,
                     down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
                     up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3),
        "vae": dict(block_out_channels=(128, 256, 512, 512), layers_per_block=2, in_channels=3, out_channels=3,
                    latent_channels=4, down_block_types=["DownEncoderBlock2D"] * 4,
                    up_block_types=["UpDecoderBlock2D"] * 4, norm_num_groups=32, sample_size=512,
                    scaling_factor=0.18215),
        "text": dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                     projection_dim=768, hidden_act="quick_gelu", **_TEXT_IDS),
        "adapter": dict(block_out_channels=(320, 640, 1280, 1280), motion_layers_per_block=2,
                        motion_mid_block_layers_per_block=1, motion_num_attention_heads=8, motion_norm_num_groups=32,
                        motion_max_seq_length=32, use_motion_mid_block=True),
        # IP-Adapter's image encoder: OpenCLIP ViT-H/14's vision tower (h94/IP-Adapter models/image_encoder)
        "image_encoder": dict(image_size=224, patch_size=14, hidden_size=1280, intermediate_size=5120,
                              num_hidden_layers=32, num_attention_heads=16, projection_dim=1024, hidden_act="gelu"),
    },
}


def tokenizer_dir() -> Path:
    """The bundled SD1.5 tokenizer files (vocab.json, merges.txt)."""
    return Path(str(resources.files("cdvideo") / "assets" / "sd15-tokenizer"))


def build_components(seed: int = 0, arch: str = TINY_ID) -> dict:
    """tokenizer, text_encoder, vae, unet, scheduler of a randomly initialised SD1.5-shaped model of `arch`."""
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel  # lazy: start-up time
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer  # lazy: start-up time

    a = ARCHITECTURES[arch]
    tokenizer = CLIPTokenizer.from_pretrained(str(tokenizer_dir()))
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        unet = UNet2DConditionModel(**a["unet"])
        vae = AutoencoderKL(**a["vae"])
        text_encoder = CLIPTextModel(CLIPTextConfig(vocab_size=len(tokenizer), **a["text"]))
    text_encoder.eval()
    return {"tokenizer": tokenizer, "text_encoder": text_encoder, "vae": vae, "unet": unet,
            "scheduler": DDPMScheduler(**SCHEDULER)}


def build_motion_adapter(seed: int = 0, arch: str = TINY_ID):
    """A diffusers MotionAdapter matching the UNet of `arch` (for SD1.5: AnimateDiff v1-5-2's layout)."""
    from diffusers import MotionAdapter  # lazy: start-up time

    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return MotionAdapter(**ARCHITECTURES[arch]["adapter"])


def save_pretrained(folder: str | Path, seed: int = 0) -> Path:
    """Write the tiny model as a diffusers folder (model_index.json + subfolders), as from the hub."""
    from diffusers import StableDiffusionPipeline  # lazy: start-up time

    c = build_components(seed)
    pipe = StableDiffusionPipeline(**c, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    pipe.save_pretrained(folder)
    return Path(folder)


def save_ip_adapter(folder: str | Path, seed: int = 0, arch: str = TINY_ID) -> Path:
    """A randomly initialised plain IP-Adapter for `arch`'s UNet in h94/IP-Adapter's layout: `ip-adapter.safetensors`
    (image_proj.*, ip_adapter.<i>.to_k_ip/to_v_ip.weight, i counting every attention layer) and `image_encoder/`.
    Returns the weights file."""
    from diffusers import UNet2DConditionModel  # lazy: start-up time
    from safetensors.torch import save_file  # lazy: start-up time
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection  # lazy: start-up time

    a, folder = ARCHITECTURES[arch], Path(folder)
    with torch.device("meta"):  # shapes only
        unet = UNet2DConditionModel(**a["unet"])
    names, shapes = list(unet.attn_processors), iter(cross_attention_shapes(unet))  # attn1, attn2 of every block
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        encoder = CLIPVisionModelWithProjection(CLIPVisionConfig(**a["image_encoder"]))
        dim, embed = a["unet"]["cross_attention_dim"], a["image_encoder"]["projection_dim"]
        state = {"image_proj.proj.weight": torch.randn(4 * dim, embed) / embed ** 0.5,
                 "image_proj.proj.bias": torch.zeros(4 * dim),
                 "image_proj.norm.weight": torch.ones(dim), "image_proj.norm.bias": torch.zeros(dim)}
        for i, name in enumerate(names):
            if name.endswith("attn2.processor"):
                shape = next(shapes)
                for kv in ("k", "v"):
                    state[f"ip_adapter.{i}.to_{kv}_ip.weight"] = torch.randn(shape) / shape[1] ** 0.5
    folder.mkdir(parents=True, exist_ok=True)
    encoder.save_pretrained(folder / "image_encoder")
    save_file(state, folder / "ip-adapter.safetensors")
    return folder / "ip-adapter.safetensors"


# -- Tiny feature extractors for `cdvideo eval` (random weights, real classes and processors) ---------------
def _seeded(fn, seed: int = 0):
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return fn()


def clip_model():
    """(CLIPModel, CLIPProcessor) with 32 px images and the bundled CLIP tokenizer."""
    from transformers import (  # lazy: start-up time
        CLIPConfig,
        CLIPImageProcessor,
        CLIPModel,
        CLIPProcessor,
        CLIPTokenizer,
    )

    tokenizer = CLIPTokenizer.from_pretrained(str(tokenizer_dir()))
    config = CLIPConfig(
        text_config={"vocab_size": len(tokenizer), "hidden_size": 32, "intermediate_size": 37,
                     "num_hidden_layers": 2, "num_attention_heads": 4, "max_position_embeddings": 77},
        vision_config={"image_size": 32, "patch_size": 8, "hidden_size": 32, "intermediate_size": 37,
                       "num_hidden_layers": 2, "num_attention_heads": 4},
        projection_dim=16)
    processor = CLIPProcessor(image_processor=CLIPImageProcessor(
        size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}), tokenizer=tokenizer)
    return _seeded(lambda: CLIPModel(config)).eval(), processor


def dino_model():
    """(ViTModel, ViTImageProcessor) shaped like DINO ViT-S/16, only smaller."""
    from transformers import ViTConfig, ViTImageProcessor, ViTModel  # lazy: start-up time

    config = ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                       intermediate_size=37)
    processor = ViTImageProcessor(size={"height": 32, "width": 32})
    return _seeded(lambda: ViTModel(config, add_pooling_layer=False)).eval(), processor


def blip_model():
    """(BlipForImageTextRetrieval, BlipProcessor) with a character-level WordPiece vocabulary."""

    from transformers import (  # lazy: start-up time
        BertTokenizer,
        BlipConfig,
        BlipForImageTextRetrieval,
        BlipImageProcessor,
        BlipProcessor,
    )

    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)] + list("0123456789.,'-")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + letters + [f"##{c}" for c in letters]
    with tempfile.TemporaryDirectory() as d:
        (Path(d) / "vocab.txt").write_text("\n".join(vocab) + "\n")
        tokenizer = BertTokenizer(str(Path(d) / "vocab.txt"), model_max_length=64)
    config = BlipConfig(
        text_config={"vocab_size": len(vocab), "hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 2,
                     "num_attention_heads": 4, "encoder_hidden_size": 32, "max_position_embeddings": 64,
                     "pad_token_id": 0, "bos_token_id": 2, "sep_token_id": 3},
        vision_config={"image_size": 32, "patch_size": 8, "hidden_size": 32, "intermediate_size": 37,
                       "num_hidden_layers": 2, "num_attention_heads": 4},
        projection_dim=16, image_text_hidden_size=16)
    processor = BlipProcessor(image_processor=BlipImageProcessor(size={"height": 32, "width": 32}),
                              tokenizer=tokenizer)
    return _seeded(lambda: BlipForImageTextRetrieval(config)).eval(), processor


def blip2_model():
    """(Blip2ForImageTextRetrieval, Blip2Processor): 4 query tokens, the tiny BLIP tokenizer."""
    from transformers import Blip2Config, Blip2ForImageTextRetrieval, Blip2Processor  # lazy: start-up time

    _, blip = blip_model()
    config = Blip2Config(
        vision_config={"image_size": 32, "patch_size": 8, "hidden_size": 32, "intermediate_size": 37,
                       "num_hidden_layers": 2, "num_attention_heads": 4},
        qformer_config={"vocab_size": len(blip.tokenizer), "hidden_size": 32, "num_hidden_layers": 2,
                        "num_attention_heads": 4, "intermediate_size": 37, "encoder_hidden_size": 32,
                        "pad_token_id": 0, "use_qformer_text_input": True},
        num_query_tokens=4, image_text_hidden_size=16)
    processor = Blip2Processor(image_processor=blip.image_processor, tokenizer=blip.tokenizer, num_query_tokens=None)
    return _seeded(lambda: Blip2ForImageTextRetrieval(config)).eval(), processor


def tiny_base() -> dict:
    """`model: tiny` in the registry of bundled bases (`cdvideo.builtins` entry point)."""
    return {"name": TINY_ID, "native_size": 64, "build": lambda: build_components(arch=TINY_ID),
            "build_adapter": lambda: build_motion_adapter(arch=TINY_ID)}


def sd15_random_base() -> dict:
    """`model: sd15-random`: SD1.5 + the v1-5-2 adapter at full size with random weights, for benchmarks."""
    return {"name": SD15_ID, "native_size": 512, "build": lambda: build_components(arch=SD15_ID),
            "build_adapter": lambda: build_motion_adapter(arch=SD15_ID)}
