"""Motion training's validation clips: the prompts through the UNetMotionModel being trained, every
`validation.every` steps, into output_dir/validation/step_N/ as GIFs."""

from __future__ import annotations

from pathlib import Path

import torch
from tqdm.auto import tqdm

from cdvideo.data.clips import write_clip
from cdvideo.pipelines.build import video_pipeline
from cdvideo.pipelines.registry import make_scheduler


@torch.no_grad()
def render_motion_validation(cfg, m: dict, unet, out: Path, step: int) -> list[Path]:
    """A clip per validation prompt and seed (default: the training prompt) with the model as it is now."""
    v = cfg.validation
    pipe = video_pipeline(m, None, make_scheduler("ddim", m["scheduler"].config, animatediff=True), unet=unet)
    pipe.set_progress_bar_config(disable=True)
    folder = Path(out) / "validation" / f"step_{step:06d}"
    was_training, written = unet.training, []
    unet.eval()
    for i, prompt in enumerate(v.prompts or [cfg.prompt]):
        for seed in v.seeds:
            frames = pipe(prompt, num_frames=cfg.num_frames, height=cfg.resolution, width=cfg.resolution,
                          num_inference_steps=v.num_inference_steps, guidance_scale=v.guidance_scale,
                          generator=torch.Generator("cpu").manual_seed(seed), output_type="pil").frames[0]
            written += write_clip(frames, folder, f"{i:02d}_seed{seed}", cfg.fps, ["gif"],
                                  {"prompt": prompt, "seed": seed, "step": step})
    unet.train(was_training)
    tqdm.write(f"validation clips for step {step}: {folder}")
    return written
