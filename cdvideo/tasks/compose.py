"""`cdvideo compose`: merge single-concept weights files into one multi-concept file (cdvideo.models.merge)."""

from __future__ import annotations

from pathlib import Path

from cdvideo.data import weights
from cdvideo.data.foreign import load_any
from cdvideo.errors import CdvideoError
from cdvideo.models.loading import load_components
from cdvideo.models.merge import check_composable, compose, rename_tokens


def compose_files(paths: list[str], output: str, method: str = "constrained", renames: list[str] = (),
                  model: str | None = None, overwrite: bool = False) -> Path:
    """`cdvideo compose`: load, check, merge against the base model and write one file."""
    out = Path(output)
    if out.exists() and not overwrite:
        raise CdvideoError(f"{out} exists; choose another -o or pass --overwrite")
    ws = [load_any(p) for p in paths]  # cdvideo files, Custom Diffusion folders, embeddings
    rename_tokens(ws, list(renames))
    check_composable(ws)
    m = load_components(model or ws[0].base_model or weights.DEFAULT_BASE)
    for w in ws:
        weights.validate(w, m["unet"], m["text_encoder"], m["tokenizer"], base_model=model, force=True)
    merged = compose(ws, m, method)
    dtype = ws[0].metadata.get("dtype", "float32")
    return weights.save(out, merged, dtype=dtype if dtype in weights.DTYPES else "float32")
