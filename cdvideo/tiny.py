"""A tiny randomly initialised SD1.5-shaped model, built in code, so everything runs offline.

Same component classes, the real SD1.5 tokenizer, an 8x VAE and cross-attention K/V layers named as in
SD1.5; only the widths are small. Deterministic: the same seed gives bitwise the same weights.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import torch

TINY_ID = "tiny"
CROSS_DIM = 32
BLOCKS = (16, 32)
LAYERS_PER_BLOCK = 1


def tokenizer_dir() -> Path:
    """The bundled SD1.5 tokenizer files (vocab.json, merges.txt)."""
    return Path(str(resources.files("cdvideo") / "assets" / "sd15-tokenizer"))


def build_components(seed: int = 0) -> dict:
    """tokenizer, text_encoder, vae, unet, scheduler of a tiny SD1.5-shaped model."""
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    tokenizer = CLIPTokenizer.from_pretrained(str(tokenizer_dir()))
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        unet = UNet2DConditionModel(
            block_out_channels=BLOCKS, layers_per_block=LAYERS_PER_BLOCK, sample_size=8,
            in_channels=4, out_channels=4, cross_attention_dim=CROSS_DIM, attention_head_dim=8,
            down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), norm_num_groups=8,
        )
        vae = AutoencoderKL(
            block_out_channels=(8, 8, 8, 8), in_channels=3, out_channels=3, latent_channels=4,
            down_block_types=["DownEncoderBlock2D"] * 4, up_block_types=["UpDecoderBlock2D"] * 4,
            norm_num_groups=2, sample_size=64,
        )
        text_encoder = CLIPTextModel(CLIPTextConfig(
            vocab_size=len(tokenizer), hidden_size=CROSS_DIM, intermediate_size=37, num_hidden_layers=2,
            num_attention_heads=4, max_position_embeddings=77, projection_dim=CROSS_DIM,
            bos_token_id=0, eos_token_id=2, pad_token_id=1,  # as SD1.5's config says (eos 2 is wrong there too)
        ))
    scheduler = DDPMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                              num_train_timesteps=1000, clip_sample=False,
                              steps_offset=1)
    text_encoder.eval()
    return {"tokenizer": tokenizer, "text_encoder": text_encoder, "vae": vae, "unet": unet,
            "scheduler": scheduler}


def build_motion_adapter(seed: int = 0):
    """A tiny diffusers MotionAdapter matching the tiny UNet."""
    from diffusers import MotionAdapter

    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return MotionAdapter(block_out_channels=BLOCKS, motion_layers_per_block=LAYERS_PER_BLOCK,
                             motion_norm_num_groups=8, motion_num_attention_heads=2,
                             motion_max_seq_length=32)


def save_pretrained(folder: str | Path, seed: int = 0) -> Path:
    """Write the tiny model as a diffusers folder (model_index.json + subfolders), as from the hub."""
    from diffusers import StableDiffusionPipeline

    c = build_components(seed)
    pipe = StableDiffusionPipeline(**c, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    pipe.save_pretrained(folder)
    return Path(folder)
