"""The one personalization file: trained cross-attention tensors + token embeddings + metadata.

Tensors keep their `UNet2DConditionModel` names (`...attn2.to_k.weight`) so the file applies by name to
both the 2D UNet and AnimateDiff's `UNetMotionModel`; `token_embeddings` (N, D) holds one row per token.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from cdvideo import __version__
from cdvideo.data.files import atomic_path
from cdvideo.errors import CdvideoError, NotCdvideoWeights, first_line

FORMAT = "cdvideo.personalization.v1"
DEFAULT_BASE = "stable-diffusion-v1-5/stable-diffusion-v1-5"
TOKEN_KEY = "token_embeddings"
PARAM_SETS = {"kv": ("attn2.to_k.", "attn2.to_v."),
              "crossattn": ("attn2.to_k.", "attn2.to_v.", "attn2.to_q.", "attn2.to_out.")}
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass
class PersonalWeights:
    unet: dict[str, torch.Tensor]
    tokens: list[str]
    class_words: list[str]
    embeddings: torch.Tensor  # (N, D)
    metadata: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None

    @property
    def base_model(self) -> str | None:
        return self.metadata.get("base_model")


def cross_attention_names(unet, params: str = "kv") -> list[str]:
    """Names of the spatial cross-attention parameters to train; never AnimateDiff's motion modules."""
    keys = PARAM_SETS[params]
    return [n for n, _ in unet.named_parameters()
            if "motion_modules." not in n and any(k in n for k in keys)]


def save(path: str | Path, w: PersonalWeights, dtype: str = "float32") -> Path:
    """Write the file atomically; metadata values are strings (JSON for structures)."""
    from safetensors.torch import save_file  # lazy: start-up time

    tensors = {n: t.detach().to("cpu", DTYPES[dtype]).contiguous() for n, t in w.unet.items()}
    tensors[TOKEN_KEY] = w.embeddings.detach().to("cpu", torch.float32).contiguous()
    meta = {**w.metadata, "format": FORMAT, "tokens": w.tokens, "class_words": w.class_words,
            "trained_params": sorted(w.unet), "dtype": dtype, "cdvideo_version": __version__}
    meta_str = {k: v if isinstance(v, str) else json.dumps(v) for k, v in meta.items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta_str)
    return Path(path)


def _read(path: Path, tensors: bool) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Decoded metadata and (if asked) the tensors of a cdvideo weights file, with clear errors."""
    from safetensors import safe_open  # lazy: start-up time

    if not path.is_file():
        raise CdvideoError(f"weights file {path} not found")
    try:
        with safe_open(str(path), framework="pt") as f:
            raw_meta = f.metadata() or {}
            keys = list(f.keys())
            found = {k: f.get_tensor(k) for k in keys} if tensors else {}
    except Exception as e:  # safetensors raises its own error types for foreign files
        raise CdvideoError(f"{path}: not a safetensors file ({first_line(e, 120)})") from None
    if raw_meta.get("format") != FORMAT or TOKEN_KEY not in keys:
        raise NotCdvideoWeights(f"{path}: not a cdvideo weights file (made by `cdvideo train` or `cdvideo compose`)")
    return {k: _decode(v) for k, v in raw_meta.items()}, found


def load_metadata(path: str | Path) -> dict[str, Any]:
    """A weights file's metadata only (base, tokens, config...), without reading its tensors."""
    return _read(Path(path), tensors=False)[0]


def load(path: str | Path) -> PersonalWeights:
    """Read a cdvideo weights file; clear errors for missing, foreign or non-safetensors files."""
    path = Path(path)
    meta, tensors = _read(path, tensors=True)
    emb = tensors.pop(TOKEN_KEY)
    return PersonalWeights(unet=tensors, tokens=list(meta["tokens"]), class_words=list(meta["class_words"]),
                           embeddings=emb, metadata=meta, path=path)


def _decode(v: str) -> Any:
    try:
        return json.loads(v)
    except json.JSONDecodeError:
        return v


def validate(w: PersonalWeights, unet, text_encoder, tokenizer, base_model: str | None = None,
             force: bool = False) -> None:
    """Check names, shapes, embedding width, tokens and base id against a base model before applying."""
    name = w.path or "weights"
    params = dict(unet.named_parameters())
    for key, t in w.unet.items():
        if "motion_modules." in key or key not in params:
            raise CdvideoError(f"{name}: tensor {key!r} has no counterpart in the base UNet; "
                               "the file was made for another architecture")
        if tuple(params[key].shape) != tuple(t.shape):
            raise CdvideoError(f"{name}: {key} has shape {tuple(t.shape)}, the base UNet "
                               f"{tuple(params[key].shape)}; the file was made for another architecture")
    width = text_encoder.get_input_embeddings().weight.shape[1]
    if w.embeddings.dim() != 2 or w.embeddings.shape != (len(w.tokens), width):
        raise CdvideoError(f"{name}: token embeddings {tuple(w.embeddings.shape)} do not fit "
                           f"{len(w.tokens)} token(s) of width {width} of this text encoder")
    taken = [t for t in w.tokens if t in tokenizer.get_added_vocab()]
    if taken:
        raise CdvideoError(f"{name}: token(s) {', '.join(taken)} are already in the tokenizer "
                           "(two files with the same token? rename one with `cdvideo compose --rename`)")
    if base_model is not None and w.base_model not in (None, base_model) and not force:
        raise CdvideoError(f"{name}: trained on base {w.base_model!r}, not {base_model!r}; "
                           "pass --force to use it on a same-shaped fine-tune")
