"""Training's validation renders: the config's prompts through the model being trained, every `validation.every`
steps, into output_dir/validation/step_N/."""

from __future__ import annotations

from pathlib import Path

import torch
from tqdm.auto import tqdm

from cdvideo.data.files import atomic_path
from cdvideo.pipelines.build import image_pipeline


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
