"""`cdvideo import` and `--weights` for foreign files: Custom Diffusion / ClassDiffusion folders and embedding
files become cdvideo weights (K/V under their UNet2DConditionModel names + token rows). Key sets are checked
against the base before anything is written or applied."""

from __future__ import annotations

from pathlib import Path

from cdvideo.data import weights
from cdvideo.data.formats import is_custom_diffusion_folder, read_custom_diffusion, read_embedding
from cdvideo.errors import CdvideoError, NotCdvideoWeights

EMBEDDING_SUFFIXES = (".safetensors", ".bin", ".pt")


def read_foreign(path: Path, class_word: str = "", token: str | None = None) -> weights.PersonalWeights:
    """A Custom Diffusion folder or an embedding file as PersonalWeights (base unknown)."""
    if is_custom_diffusion_folder(path):
        unet, tokens, rows = read_custom_diffusion(path)
        source = "custom_diffusion"
    elif path.is_file() and path.suffix in EMBEDDING_SUFFIXES:
        tokens, rows = read_embedding(path, token)
        unet, source = {}, "embedding"
    elif path.is_dir():
        raise CdvideoError(f"{path}: neither a cdvideo weights file nor a Custom Diffusion folder "
                           "(pytorch_custom_diffusion_weights.bin or .safetensors with <token>.bin files)")
    else:
        raise CdvideoError(f"{path}: not found, or not a weights file, Custom Diffusion folder or embedding file")
    meta = {"imported_from": str(path.resolve()), "source_format": source, "initializers": [class_word] * len(tokens)}
    return weights.PersonalWeights(unet=unet, tokens=tokens, class_words=[class_word] * len(tokens),
                                   embeddings=rows, metadata=meta, path=path)


def load_any(path: str | Path, class_word: str = "") -> weights.PersonalWeights:
    """A cdvideo weights file, or anything `read_foreign` reads."""
    path = Path(path)
    if path.is_file() and path.suffix == ".safetensors":
        try:
            return weights.load(path)
        except NotCdvideoWeights:
            pass  # another tool's file: read below
    elif not path.exists():
        raise CdvideoError(f"weights file {path} not found")
    return read_foreign(path, class_word)


def check_key_set(w: weights.PersonalWeights, unet) -> None:
    """A K/V set must be complete for one of the parameter sets (kv, crossattn) of this UNet: list what is missing
    or extra, so that nothing is applied half-way."""
    if not w.unet:
        return
    found = set(w.unet)
    for params in ("kv", "crossattn"):
        expected = set(weights.cross_attention_names(unet, params))
        if found == expected:
            return
    expected = set(weights.cross_attention_names(unet, "crossattn" if any(".to_q." in k for k in found) else "kv"))
    missing, extra = sorted(expected - found), sorted(found - expected)
    raise CdvideoError(f"{w.path}: {len(found)} cross-attention tensors found, {len(expected)} expected by this base "
                       f"({len(missing)} missing, e.g. {missing[:1]}; {len(extra)} unknown, e.g. {extra[:1]})")
