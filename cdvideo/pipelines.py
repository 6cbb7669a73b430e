"""Pipelines composed from loaded components: diffusers' StableDiffusionPipeline and AnimateDiffPipeline,
never subclassed; registries of motion adapters and schedulers; base model + personalization loading."""

from __future__ import annotations

from pathlib import Path

import torch
from tqdm.auto import tqdm

from . import tiny, weights
from .errors import CdvideoError
from .files import atomic_path
from .models import load_components, load_error

ADAPTERS = {
    "v1-5-2": "guoyww/animatediff-motion-adapter-v1-5-2",
    "v1-5-3": "guoyww/animatediff-motion-adapter-v1-5-3",
    "v1-5": "guoyww/animatediff-motion-adapter-v1-5",
    "tiny": tiny.TINY_ID,
}
DEFAULT_ADAPTER = "v1-5-2"
# AnimateDiff's motion modules were trained with these DDIM settings
ANIMATEDIFF_SCHEDULER = {"beta_schedule": "linear", "clip_sample": False, "timestep_spacing": "linspace",
                         "steps_offset": 1}
SCHEDULERS = {
    "ddim": "DDIMScheduler", "euler": "EulerDiscreteScheduler", "euler_a": "EulerAncestralDiscreteScheduler",
    "dpmpp": "DPMSolverMultistepScheduler", "pndm": "PNDMScheduler", "lms": "LMSDiscreteScheduler",
    "ddpm": "DDPMScheduler",
}


def make_scheduler(name: str, base_config, animatediff: bool):
    """A scheduler by short name from the base model's config (with AnimateDiff's settings for video)."""
    import diffusers

    if name not in SCHEDULERS:
        raise CdvideoError(f"unknown scheduler {name!r}; choose from {', '.join(SCHEDULERS)}")
    cls = getattr(diffusers, SCHEDULERS[name])
    return cls.from_config(base_config, **(ANIMATEDIFF_SCHEDULER if animatediff else {}))


def pick_device(device: str | None, dtype: str | None) -> tuple[torch.device, torch.dtype]:
    """CUDA when present with fp16 there; fp32 on CPU. Explicit choices win."""
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if dtype is not None and dtype not in weights.DTYPES:
        raise CdvideoError(f"--dtype {dtype}: choose from {', '.join(weights.DTYPES)}")
    return dev, weights.DTYPES[dtype] if dtype else (torch.float16 if dev.type == "cuda" else torch.float32)


def load_adapter(name: str, dtype: torch.dtype):
    """A MotionAdapter by registry name, hub id or local folder."""
    from diffusers import MotionAdapter

    ref = ADAPTERS.get(name, name)
    if ref == tiny.TINY_ID:
        adapter = tiny.build_motion_adapter()
        return adapter if dtype == torch.float32 else adapter.to(dtype)
    if "/" not in ref and not Path(ref).exists():
        raise CdvideoError(f"unknown motion adapter {name!r}; use one of {', '.join(ADAPTERS)}, "
                           "a hub id or a local folder")
    try:
        return MotionAdapter.from_pretrained(ref, torch_dtype=dtype)
    except (OSError, ValueError) as e:
        raise load_error(ref, e) from None


def load_personalized(model: str | None, weight_files: list[str], scale: float = 1.0, force: bool = False,
                      revision: str | None = None, variant: str | None = None,
                      dtype: torch.dtype = torch.float32) -> tuple[dict, weights.PersonalWeights | None, str]:
    """Base components with the weights file(s) validated and applied (K/V by name + token rows), the applied
    weights, and the base model id used (`model`, else the first file's base, else SD1.5)."""
    ws = [weights.load(p) for p in weight_files]
    base = model or (ws[0].base_model if ws and ws[0].base_model else weights.DEFAULT_BASE)
    for w in ws:  # before loading gigabytes
        if w.base_model not in (None, base) and not force:
            raise CdvideoError(f"{w.path}: trained on base {w.base_model!r}, not {base!r}; "
                               "pass --force to use it on a same-shaped fine-tune")
    m = load_components(base, revision, variant, dtype=dtype)
    w = ws[0] if ws else None
    if len(ws) > 1:
        from .compose import compose

        tqdm.write(f"composing {len(ws)} weights files on the fly (constrained, as `cdvideo compose`)")
        for other in ws:
            weights.validate(other, m["unet"], m["text_encoder"], m["tokenizer"], base_model=base, force=force)
        w = compose(ws, m)
    if w is not None:
        weights.validate(w, m["unet"], m["text_encoder"], m["tokenizer"], base_model=base, force=force)
        weights.apply(w, m["unet"], m["text_encoder"], m["tokenizer"], scale=scale)
    return m, w, base


def video_pipeline(m: dict, adapter, scheduler):
    """diffusers' AnimateDiffPipeline over the (personalized) 2D UNet; it builds the UNetMotionModel."""
    from diffusers import AnimateDiffPipeline

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
