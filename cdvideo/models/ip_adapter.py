"""IP-Adapter (Ye et al. 2023, "IP-Adapter: Text Compatible Image Prompt Adapter"): an image prompt through extra
cross-attention keys and values. Read from one weights file in h94/IP-Adapter's layout (`image_proj.*`,
`ip_adapter.<i>.to_k_ip/to_v_ip.weight`; `.safetensors` or `.bin`) with its CLIP image encoder in `image_encoder/`
beside it, checked against the base it conditions before anything renders."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import torch

from cdvideo.data.hub import download_file
from cdvideo.errors import CdvideoError, first_line

# short names for h94's SD1.5 IP-Adapters (the image encoder sits in models/image_encoder beside each file)
IP_ADAPTERS = {
    "sd15": "h94/IP-Adapter/models/ip-adapter_sd15.safetensors",
    "sd15-light": "h94/IP-Adapter/models/ip-adapter_sd15_light.safetensors",
    "plus-sd15": "h94/IP-Adapter/models/ip-adapter-plus_sd15.safetensors",
}
ENCODER_FOLDER = "image_encoder"
HUB_FILE = re.compile(r"([\w.-]+/[\w.-]+)/((?:[\w.-]+/)*[\w.-]+\.(?:safetensors|bin))")  # owner/repo/path/file


@dataclass
class IPAdapter:
    """An IP-Adapter's weights (diffusers' {"image_proj": ..., "ip_adapter": ...}), image encoder and processor."""
    state: dict
    image_encoder: object  # transformers' CLIPVisionModelWithProjection
    feature_extractor: object  # transformers' CLIPImageProcessor at the encoder's image size
    path: Path


def load_ip_adapter(ref: str, dtype: torch.dtype) -> IPAdapter:
    """An IP-Adapter by short name (`IP_ADAPTERS`), local weights file or hub path (owner/repo/folder/file), with
    the image encoder in `image_encoder/` beside the file; anything missing or damaged is one line."""
    path = _local_file(IP_ADAPTERS.get(ref, ref))
    state = read_weights(path, dtype)
    encoder, processor = load_image_encoder(path.parent / ENCODER_FOLDER, dtype, ref)
    return IPAdapter(state, encoder, processor, path)


def _local_file(ref: str) -> Path:
    path = Path(ref)
    if path.is_file():
        return path
    hub = HUB_FILE.fullmatch(ref)
    if path.exists() or not hub or ref.startswith((".", "/")):
        raise CdvideoError(f"IP-Adapter {ref}: no such file; give a weights file (.safetensors or .bin) with its "
                           f"image encoder in {ENCODER_FOLDER}/ beside it, a hub path (owner/repo/folder/file) or "
                           f"one of {', '.join(IP_ADAPTERS)}")
    repo, file = hub.groups()
    encoder = f"{Path(file).parent.as_posix()}/{ENCODER_FOLDER}/*".lstrip("./")
    return download_file(repo, file, f"IP-Adapter {ref}", also=(encoder,))


def read_weights(path: Path, dtype: torch.dtype) -> dict:
    """{"image_proj": {...}, "ip_adapter": {...}} from a `.safetensors` (prefixed keys) or `.bin` (nested) file."""
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file  # lazy: start-up time

            flat = load_file(str(path))
            state = {part: {k[len(part) + 1:]: v for k, v in flat.items() if k.startswith(part + ".")}
                     for part in ("image_proj", "ip_adapter")}
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # safetensors and pickle raise many types for a damaged file
        first = first_line(e, 160)
        raise CdvideoError(f"IP-Adapter {path}: cannot be read ({first}); is it a complete IP-Adapter?") from None
    if not isinstance(state, dict) or not state.get("image_proj") or not state.get("ip_adapter"):
        raise CdvideoError(f"IP-Adapter {path}: holds no image_proj and ip_adapter weights; is it an IP-Adapter?")
    return {part: {k: v.to(dtype) for k, v in weights.items()} for part, weights in state.items()}


def load_image_encoder(folder: Path, dtype: torch.dtype, ref: str):
    """(CLIPVisionModelWithProjection, CLIPImageProcessor at its image size) from `folder`."""
    from transformers import CLIPImageProcessor, CLIPVisionModelWithProjection  # lazy: start-up time

    if not (folder / "config.json").is_file():
        raise CdvideoError(f"IP-Adapter {ref}: its image encoder is missing; put the CLIP image encoder "
                           f"(config.json and weights) in {folder}, as h94/IP-Adapter keeps it")
    try:
        encoder = CLIPVisionModelWithProjection.from_pretrained(str(folder), dtype=dtype).eval()
    except Exception as e:  # transformers raises many types for a bad folder
        first = first_line(e, 160)
        raise CdvideoError(f"IP-Adapter image encoder {folder}: cannot be read ({first})") from None
    size = encoder.config.image_size
    return encoder, CLIPImageProcessor(size=size, crop_size=size)


def cross_attention_shapes(unet) -> list[tuple[int, int]]:
    """(width, cross_attention_dim) of each cross-attention layer of a 2D UNet, in its processors' order: the
    shapes of an IP-Adapter's to_k_ip/to_v_ip weights for it."""
    return [tuple(module.to_k.weight.shape) for name, module in unet.named_modules() if name.endswith("attn2")]


def check_fits(ip: IPAdapter, unet, ref: str, base: str) -> None:
    """A one-line error unless the IP-Adapter was made for a UNet of the base's shape, fed by its own encoder."""
    keys = sorted({int(k.split(".")[0]) for k in ip.state["ip_adapter"]})
    have = [tuple(ip.state["ip_adapter"][f"{k}.to_k_ip.weight"].shape) for k in keys
            if f"{k}.to_k_ip.weight" in ip.state["ip_adapter"]]
    want = cross_attention_shapes(unet)
    if have != want:
        raise CdvideoError(f"IP-Adapter {ref} was made for another base than {base} ({len(have)} cross-attention "
                           f"layers {_widths(have)} vs {len(want)} {_widths(want)}); use an IP-Adapter trained for "
                           "this base (SD1.5's for SD1.5)")
    proj = ip.state["image_proj"].get("proj.weight")  # the plain IP-Adapter's projection of the image embedding
    if proj is not None and proj.shape[1] != ip.image_encoder.config.projection_dim:
        raise CdvideoError(f"IP-Adapter {ref}: its image encoder gives {ip.image_encoder.config.projection_dim}-d "
                           f"embeddings, the adapter takes {proj.shape[1]}-d; use the encoder it was trained with")


def _widths(shapes: list[tuple[int, int]]) -> str:
    return f"of widths {sorted({w for w, _ in shapes})} reading {sorted({c for _, c in shapes})}-d text"
