"""Pipelines composed from loaded components: diffusers' StableDiffusionPipeline and AnimateDiffPipeline,
never subclassed; registries of motion adapters and schedulers; base model + personalization loading."""

from __future__ import annotations

from pathlib import Path

import torch
from tqdm.auto import tqdm

from . import tiny, toyworld, weights
from .errors import CdvideoError
from .files import atomic_path, sha256_file
from .models import load_components, load_error

ADAPTERS = {
    "v1-5-2": "guoyww/animatediff-motion-adapter-v1-5-2",
    "v1-5-3": "guoyww/animatediff-motion-adapter-v1-5-3",
    "v1-5": "guoyww/animatediff-motion-adapter-v1-5",
    "tiny": tiny.TINY_ID,
    "toyworld": toyworld.MODEL_ID,
    "v1-5-2-random": tiny.SD15_ID,  # v1-5-2's layout with random weights, for benchmarks
}
DEFAULT_ADAPTER = "v1-5-2"
BASE_ADAPTERS = {tiny.TINY_ID: "tiny", toyworld.MODEL_ID: "toyworld", tiny.SD15_ID: "v1-5-2-random"}


def default_adapter(model: str) -> str:
    """The motion adapter a base renders with unless --adapter says otherwise."""
    return BASE_ADAPTERS.get(model, DEFAULT_ADAPTER)
# AnimateDiff's motion modules were trained with these DDIM settings
ANIMATEDIFF_SCHEDULER = {"beta_schedule": "linear", "clip_sample": False, "timestep_spacing": "linspace",
                         "steps_offset": 1}
SCHEDULERS = {
    "ddim": "DDIMScheduler", "euler": "EulerDiscreteScheduler", "euler_a": "EulerAncestralDiscreteScheduler",
    "dpmpp": "DPMSolverMultistepScheduler", "pndm": "PNDMScheduler", "lms": "LMSDiscreteScheduler",
    "ddpm": "DDPMScheduler", "lcm": "LCMScheduler",
}


def make_scheduler(name: str, base_config, animatediff: bool, **overrides):
    """A scheduler by short name from the base model's config (with AnimateDiff's settings for video, and a
    few-step preset's on top)."""
    import diffusers

    if name not in SCHEDULERS:
        raise CdvideoError(f"unknown scheduler {name!r}; choose from {', '.join(SCHEDULERS)}")
    cls = getattr(diffusers, SCHEDULERS[name])
    return cls.from_config(base_config, **{**(ANIMATEDIFF_SCHEDULER if animatediff else {}), **overrides})


def pick_device(device: str | None, dtype: str | None) -> tuple[torch.device, torch.dtype]:
    """CUDA when present with fp16 there; fp32 on CPU. Explicit choices win."""
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if dtype is not None and dtype not in weights.DTYPES:
        raise CdvideoError(f"--dtype {dtype}: choose from {', '.join(weights.DTYPES)}")
    return dev, weights.DTYPES[dtype] if dtype else (torch.float16 if dev.type == "cuda" else torch.float32)


def load_adapter(name: str, dtype: torch.dtype):
    """A MotionAdapter by registry name (few-step presets included), hub id, local folder, or one file (an original
    AnimateDiff motion module or a diffusers state dict)."""
    from diffusers import MotionAdapter

    from .interop import bases, presets

    ref = presets.adapter_source(name) if name in presets.PRESETS else ADAPTERS.get(name, name)
    if Path(ref).is_file():
        return bases.load_motion_file(ref, dtype)
    if ref in tiny.ARCHITECTURES:
        adapter = tiny.build_motion_adapter(arch=ref)
        return adapter if dtype == torch.float32 else adapter.to(dtype)
    if ref == toyworld.MODEL_ID:
        ref = str(toyworld.adapter_dir())
    if "/" not in ref and not Path(ref).exists():
        raise CdvideoError(f"unknown motion adapter {name!r}; use one of {', '.join([*ADAPTERS, *presets.PRESETS])}, "
                           "a hub id, a local folder or a motion-module file")
    try:
        return MotionAdapter.from_pretrained(ref, torch_dtype=dtype)
    except (OSError, ValueError) as e:
        raise load_error(ref, e) from None


def load_personalized(model: str | None, weight_files: list[str], scale: float = 1.0, force: bool = False,
                      revision: str | None = None, variant: str | None = None, dtype: torch.dtype = torch.float32,
                      model_config: str | None = None) -> tuple[dict, weights.PersonalWeights | None, str]:
    """Base components with the weights file(s) validated and applied (K/V by name + token rows), the applied
    weights, and the base model id used (`model`, else the first file's base, else SD1.5). Weights files may
    also be Custom Diffusion folders or embedding files (read through `cdvideo.interop`)."""
    from .interop.importer import load_any

    ws = [load_any(p) for p in weight_files]
    base = model or (ws[0].base_model if ws and ws[0].base_model else weights.DEFAULT_BASE)
    base_hash = None  # a one-file base is hashed once, however many weights files record its sha256
    if Path(base).is_file() and any(w.metadata.get("base_sha256") for w in ws):

        base_hash = sha256_file(base)
    force = any([check_base(w, base, force, base_hash) for w in ws]) or force  # before loading gigabytes
    config = model_config or (ws[0].metadata.get("base_config") if ws else None)
    m = load_components(base, revision, variant, dtype=dtype, config=config)
    from .interop.importer import check_key_set

    for other in ws:  # names and shapes first (another architecture says so), then completeness
        weights.validate(other, m["unet"], m["text_encoder"], m["tokenizer"], base_model=base, force=force)
        check_key_set(other, m["unet"])  # a partial K/V set would be applied half-way
    w = ws[0] if ws else None
    if len(ws) > 1:
        from .compose import compose

        tqdm.write(f"composing {len(ws)} weights files on the fly (constrained, as `cdvideo compose`)")
        w = compose(ws, m)
    if w is not None:
        weights.validate(w, m["unet"], m["text_encoder"], m["tokenizer"], base_model=base, force=force)
        weights.apply(w, m["unet"], m["text_encoder"], m["tokenizer"], scale=scale)
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


def video_pipeline(m: dict, adapter, scheduler, adapter_name: str = "adapter", base: str = "base"):
    """diffusers' AnimateDiffPipeline over the (personalized) 2D UNet; it builds the UNetMotionModel."""
    from diffusers import AnimateDiffPipeline

    from .interop.bases import check_adapter_fits

    check_adapter_fits(adapter, m["unet"], adapter_name, base)
    pipe = AnimateDiffPipeline(vae=m["vae"], text_encoder=m["text_encoder"], tokenizer=m["tokenizer"],
                               unet=m["unet"], motion_adapter=adapter, scheduler=scheduler)
    return pipe


def image_pipeline(m: dict, unet=None, text_encoder=None, scheduler=None):
    """A StableDiffusionPipeline over components `m`, with optional replacements; no safety checker."""
    from diffusers import DPMSolverMultistepScheduler, StableDiffusionPipeline

    pipe = StableDiffusionPipeline(
        vae=m["vae"], text_encoder=text_encoder or m["text_encoder"], tokenizer=m["tokenizer"],
        unet=unet or m["unet"],
        scheduler=scheduler or DPMSolverMultistepScheduler.from_config(m["scheduler"].config),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def expand_prompts(templates: list[str], concepts) -> list[str]:
    """Fill {token}/{class_word} once per concept; prompts without placeholders are kept once."""
    out: list[str] = []
    for tpl in templates:
        if "{token}" in tpl or "{class_word}" in tpl:
            out += [tpl.format(token=c.token, class_word=c.class_word) for c in concepts]
        else:
            out.append(tpl)
    return out


@torch.no_grad()
def render_validation(cfg, m: dict, unet, text_encoder, out: Path, step: int) -> list[Path]:
    """Images for the fixed validation prompts and seeds into output_dir/validation/step_N/."""
    v = cfg.validation
    pipe = image_pipeline(m, unet=unet, text_encoder=text_encoder)
    folder = Path(out) / "validation" / f"step_{step:06d}"
    written = []
    was_training = unet.training
    unet.eval()
    for i, prompt in enumerate(expand_prompts(v.prompts, cfg.concepts)):
        for seed in v.seeds:
            gen = torch.Generator(pipe.device).manual_seed(seed)
            image = pipe(prompt, num_inference_steps=v.num_inference_steps, guidance_scale=v.guidance_scale,
                         height=cfg.resolution, width=cfg.resolution, generator=gen).images[0]
            path = folder / f"{i:02d}_seed{seed}.png"
            with atomic_path(path) as tmp:
                image.save(tmp, format="PNG")
            written.append(path)
    unet.train(was_training)
    tqdm.write(f"validation images for step {step}: {folder}")
    return written
