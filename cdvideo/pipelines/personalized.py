"""A base model with weights files validated and applied (several are composed on the fly), and the check that a
file meets the base it was trained on."""

from __future__ import annotations

from pathlib import Path

import torch
from tqdm.auto import tqdm

from cdvideo.data import weights
from cdvideo.data.files import sha256_file
from cdvideo.data.foreign import check_key_set, load_any
from cdvideo.errors import CdvideoError
from cdvideo.models import personalize
from cdvideo.models.loading import load_components
from cdvideo.models.merge import compose


def load_personalized(model: str | None, weight_files: list[str], scale: float = 1.0, force: bool = False,
                      revision: str | None = None, variant: str | None = None, dtype: torch.dtype = torch.float32,
                      model_config: str | None = None) -> tuple[dict, weights.PersonalWeights | None, str]:
    """Base components with the weights file(s) validated and applied (K/V by name + token rows), the applied
    weights, and the base model id used (`model`, else the first file's base, else SD1.5). Weights files may
    also be Custom Diffusion folders or embedding files (read by `cdvideo.data.foreign`)."""

    ws = [load_any(p) for p in weight_files]
    base = model or (ws[0].base_model if ws and ws[0].base_model else weights.DEFAULT_BASE)
    base_hash = None  # a one-file base is hashed once, however many weights files record its sha256
    if Path(base).is_file() and any(w.metadata.get("base_sha256") for w in ws):

        base_hash = sha256_file(base)
    force = any([check_base(w, base, force, base_hash) for w in ws]) or force  # before loading gigabytes
    config = model_config or (ws[0].metadata.get("base_config") if ws else None)
    m = load_components(base, revision, variant, dtype=dtype, config=config)

    for other in ws:  # names and shapes first (another architecture says so), then completeness
        weights.validate(other, m["unet"], m["text_encoder"], m["tokenizer"], base_model=base, force=force)
        check_key_set(other, m["unet"])  # a partial K/V set would be applied half-way
    w = ws[0] if ws else None
    if len(ws) > 1:
        tqdm.write(f"composing {len(ws)} weights files on the fly (constrained, as `cdvideo compose`)")
        w = compose(ws, m)
    if w is not None:
        weights.validate(w, m["unet"], m["text_encoder"], m["tokenizer"], base_model=base, force=force)
        personalize.apply(w, m["unet"], m["text_encoder"], m["tokenizer"], scale=scale)
    return m, w, base


def check_base(w: weights.PersonalWeights, base: str, force: bool, base_hash: str | None = None) -> bool:
    """The weights were trained on this base: the same id, or for a one-file base the same content (its sha256, given
    as `base_hash` when already computed; then True: the id may differ, the file having moved). Else an error,
    unless `force`."""
    recorded = w.metadata.get("base_sha256")
    if recorded and Path(base).is_file():

        actual = base_hash or sha256_file(base)
        if actual != recorded and not force:
            raise CdvideoError(f"{w.path}: trained on a base with sha256 {recorded[:12]}..., but {base} has sha256 "
                               f"{actual[:12]}...; pass --force to use it on a same-shaped fine-tune")
        return actual == recorded
    if w.base_model not in (None, base) and not force:
        raise CdvideoError(f"{w.path}: trained on base {w.base_model!r}, not {base!r}; "
                           "pass --force to use it on a same-shaped fine-tune")
    return False
