"""`cdvideo import`: another trainer's weights (Custom Diffusion folders, embeddings) as one cdvideo weights file,
checked against the base it will be used with."""

from __future__ import annotations

from pathlib import Path

from cdvideo.data import weights
from cdvideo.data.foreign import check_key_set, read_foreign
from cdvideo.errors import CdvideoError
from cdvideo.models.loading import load_components


def import_weights(src: str, output: str, model: str, class_word: str = "", token: str | None = None,
                   model_config: str | None = None, overwrite: bool = False) -> Path:
    """`cdvideo import`: convert, check against the base, write one cdvideo weights file."""
    out = Path(output)
    if out.exists() and not overwrite:
        raise CdvideoError(f"{out} exists; choose another -o or pass --overwrite")
    w = read_foreign(Path(src), class_word, token)
    m = load_components(model, config=model_config)
    check_key_set(w, m["unet"])
    weights.validate(w, m["unet"], m["text_encoder"], m["tokenizer"])
    w.metadata["base_model"] = model
    if model_config:
        w.metadata["base_config"] = model_config
    return weights.save(out, w)
