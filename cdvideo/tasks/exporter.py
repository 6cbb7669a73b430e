"""`cdvideo export`: a weights file in the layouts other tools load.

- diffusers: the two-file Custom Diffusion layout plus `<token>.safetensors`, for `unet.load_attn_procs` and
  `load_textual_inversion`.
- lora: kohya SD1.x LoRA (truncated SVD of W - W0, rank 32 by default, `--rank full` exact) with `ss_*` metadata,
  and each token as an A1111/ComfyUI embedding `<token>.safetensors` beside it.
- full: a complete diffusers pipeline folder with the personalization merged in; `--single-file` writes one
  original-layout `.safetensors` instead (plus the token embeddings beside it: one-file checkpoints carry no
  tokenizer).
Every output records base model and tokens in its metadata and appears only once complete.
"""

from __future__ import annotations

import json
from pathlib import Path

from cdvideo import __version__
from cdvideo.data import formats, weights
from cdvideo.data.files import atomic_folder, atomic_path, file_stem, sha256_file, write_text_atomic
from cdvideo.data.foreign import check_key_set, load_any
from cdvideo.data.ldm import to_ldm
from cdvideo.errors import CdvideoError
from cdvideo.math import lora
from cdvideo.models import personalize
from cdvideo.models.loading import load_components
from cdvideo.pipelines.personalized import check_base

FORMATS = ("diffusers", "lora", "full")
USAGE = {"lora": "ComfyUI: load {lora} with a LoRA loader and write embedding:{emb} in the prompt; A1111: put "
                 "{emb}.safetensors in embeddings/, {lora} in models/Lora/ and prompt '<lora:{stem}:1> ... {emb} ...'; "
                 "diffusers: pipe.load_lora_weights('{lora}'), pipe.load_textual_inversion('{emb}.safetensors', "
                 "token='{token}')",
         "diffusers": "pipe.unet.load_attn_procs(folder, weight_name='pytorch_custom_diffusion_weights.bin', "
                      "_pipeline=pipe); pipe.load_textual_inversion(folder, weight_name='{emb}.safetensors') "
                      "(diffusers 0.42 installs the processors only when given _pipeline); prompt with {token}",
         "full": "StableDiffusionPipeline.from_pretrained(folder) and prompt with {token}, or from_single_file + "
                 "load_textual_inversion('{emb}.safetensors', token='{token}'); ComfyUI/A1111: embedding:{emb} / {emb}"}
SUFFIX = ".safetensors"  # what ComfyUI and AUTOMATIC1111 list in their model folders


def record(w: weights.PersonalWeights, base: str, fmt: str) -> dict[str, str]:
    """String metadata every export carries: names and hashes, never a local path (a shared file carries it)."""
    return {"cdvideo_version": __version__, "base_model": public_name(base), "tokens": json.dumps(w.tokens),
            "class_words": json.dumps(w.class_words), "exported_as": fmt,
            "source": w.path.name if w.path else "", "source_sha256": sha256_file(w.path) if w.path else ""}


def public_name(base: str) -> str:
    """A hub id as it is; a local folder or file by its name only."""
    return Path(base).name if Path(base).expanduser().exists() else base


def with_suffix(output: str) -> Path:
    """`-o NAME` -> NAME.safetensors (kept when given)."""
    out = Path(output)
    return out if out.suffix.lower() == SUFFIX else out.with_name(out.name + SUFFIX)


def embedding_paths(out: Path, tokens: list[str]) -> list[Path]:
    """One A1111/ComfyUI embedding beside `out` per token (a multi-vector token's in one), named so every system
    accepts it (`<new1>` -> new1)."""
    paths = [out.with_name(f"{file_stem(name)}{SUFFIX}") for name, _ in formats.token_groups(tokens)]
    if len(set(paths)) < len(paths) or out in paths:
        raise CdvideoError(f"tokens {', '.join(tokens)}: their embedding file names clash in {out.parent}; rename a "
                           "token with cdvideo compose --rename or choose another -o")
    return paths


def _free(path: Path, overwrite: bool) -> None:
    if path.exists() and not overwrite:
        raise CdvideoError(f"{path} exists; choose another -o or pass --overwrite")


def _folder(final: Path, overwrite: bool, write) -> list[Path]:
    """Write into a hidden temporary folder, then move it into place (an old one removed only then)."""
    _free(final, overwrite)
    with atomic_folder(final) as tmp:
        write(tmp)
    return [final]


def load_base(w: weights.PersonalWeights, model: str | None, model_config: str | None = None) -> tuple[dict, str]:
    base = model or w.base_model or weights.DEFAULT_BASE
    force = check_base(w, base, force=bool(model))
    m = load_components(base, config=model_config or w.metadata.get("base_config"))
    check_key_set(w, m["unet"])
    weights.validate(w, m["unet"], m["text_encoder"], m["tokenizer"], base_model=base, force=force or bool(model))
    return m, base


def export_weights(src: str, fmt: str, output: str, rank: int | str = 32, single_file: bool = False,
                   model: str | None = None, model_config: str | None = None, overwrite: bool = False
                   ) -> tuple[list[Path], dict]:
    """Write the export; returns the files and a report (per-layer LoRA errors)."""
    if fmt not in FORMATS:
        raise CdvideoError(f"--format {fmt}: choose from {', '.join(FORMATS)}")
    w = load_any(src)
    typed = [name for name, _ in formats.token_groups(w.tokens)]  # what a prompt holds: sks for sks, sks_1 ...
    out = Path(output)
    if fmt == "diffusers":
        base = model or w.base_model or weights.DEFAULT_BASE
        meta = record(w, base, fmt)
        written = _folder(out, overwrite, lambda d: (
            formats.write_custom_diffusion(d, w.unet, w.tokens, w.embeddings, meta),
            write_text_atomic(d / "cdvideo_export.json", json.dumps(meta, indent=1))))
        return written, {"tokens": typed}
    m, base = load_base(w, model, model_config)
    if fmt == "lora" or single_file:
        out = with_suffix(output)
    if fmt == "lora":
        written, report = export_lora(w, m, base, out, rank, overwrite)
    else:
        written, report = export_full(w, m, base, out, single_file, overwrite)
    return written, {**report, "tokens": typed}


def export_lora(w, m: dict, base: str, out: Path, rank: int | str, overwrite: bool) -> tuple[list[Path], dict]:
    from safetensors.torch import save_file  # lazy: start-up time

    r = None if rank == "full" else int(rank)
    if r is not None and r < 1:
        raise CdvideoError(f"--rank {rank}: a positive number or full")
    params = dict(m["unet"].named_parameters())
    deltas = {k: v.double() - params[k].detach().double() for k, v in w.unet.items()}
    tensors, errors, alpha = lora.to_kohya(deltas, r)
    dim = max((t.shape[0] for k, t in tensors.items() if k.endswith(".lora_down.weight")), default=0)
    source = record(w, base, "lora")  # hashes the source once for the LoRA and its embeddings
    meta = {**source, "ss_network_module": "networks.lora", "ss_network_dim": str(dim),
            "ss_network_alpha": str(alpha), "ss_base_model_version": "sd_v1", "ss_v2": "False",
            "ss_output_name": out.stem, "ss_sd_model_name": Path(base).name,
            "ss_training_comment": "ClassDiffusion K/V exported by cdvideo (truncated SVD of W - W0)"}
    embeddings = embedding_paths(out, w.tokens)
    for p in [out, *embeddings]:
        _free(p, overwrite)
    with atomic_path(out) as tmp:
        save_file(tensors, str(tmp), metadata=meta)
    write_embeddings(w, embeddings, source)
    report = {"errors": errors, "total_error": lora.total_error(deltas, errors), "rank": "full" if r is None else r}
    return [out, *embeddings], report


def write_embeddings(w, paths: list[Path], meta: dict[str, str]) -> None:
    """Each token's rows (n, D) as an A1111/ComfyUI embedding file, with the export's metadata."""
    for path, (_, idx) in zip(paths, formats.token_groups(w.tokens)):
        with atomic_path(path) as tmp:
            formats.write_a1111_embedding(tmp, w.embeddings[idx], {**meta, "exported_as": "embedding"})


def export_full(w, m: dict, base: str, out: Path, single_file: bool, overwrite: bool) -> tuple[list[Path], dict]:
    from diffusers import DDIMScheduler, StableDiffusionPipeline  # lazy: start-up time

    if single_file:
        from safetensors.torch import save_file  # lazy: start-up time

        personalize.apply(w, m["unet"], m["text_encoder"], m["tokenizer"])
        state = to_ldm(m["unet"], m["vae"], m["text_encoder"])
        emb_key = "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight"
        n_base = len(m["tokenizer"]) - len(w.tokens)
        state[emb_key] = state[emb_key][:n_base].contiguous()  # the base vocabulary; tokens go beside
        embeddings = embedding_paths(out, w.tokens)
        for p in [out, *embeddings]:
            _free(p, overwrite)
        meta = record(w, base, "full-single-file")
        with atomic_path(out) as tmp:
            save_file(state, str(tmp), metadata=meta)
        write_embeddings(w, embeddings, meta)
        return [out, *embeddings], {}
    personalize.apply(w, m["unet"], m["text_encoder"], m["tokenizer"])
    pipe = StableDiffusionPipeline(vae=m["vae"], text_encoder=m["text_encoder"], tokenizer=m["tokenizer"],
                                   unet=m["unet"], scheduler=DDIMScheduler.from_config(m["scheduler"].config),
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    meta = record(w, base, "full")
    return _folder(out, overwrite, lambda d: (pipe.save_pretrained(str(d)),
                                              write_text_atomic(d / "cdvideo_export.json",
                                                                json.dumps(meta, indent=1)))), {}

