"""Prior preservation: class images from a folder, generated with the base model when too few are there."""

from __future__ import annotations

from pathlib import Path

import torch
from tqdm.auto import tqdm

from cdvideo.data.files import atomic_path, slug
from cdvideo.data.photos import IMAGE_SUFFIXES, load_folder
from cdvideo.pipelines.build import image_pipeline


def class_dir(cfg, class_word: str) -> Path:
    root = Path(cfg.prior.class_images) if cfg.prior.class_images else Path(cfg.output_dir) / "class_images"
    return root / slug(class_word)


@torch.no_grad()
def generate_class_images(m: dict, folder: Path, prompt: str, count: int, steps: int, guidance: float,
                          resolution: int) -> None:
    """Fill `folder` up to `count` images of `prompt` from the base model (seed = image index)."""
    folder.mkdir(parents=True, exist_ok=True)
    have = [p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES]
    missing = [i for i in range(count) if not (folder / f"{i:05d}.png").exists()][: max(0, count - len(have))]
    if not missing:
        return
    pipe = image_pipeline(m)
    for i in tqdm(missing, desc=f"class images ({prompt})"):
        gen = torch.Generator(pipe.device).manual_seed(i)
        image = pipe(prompt, num_inference_steps=steps, guidance_scale=guidance, height=resolution,
                     width=resolution, generator=gen).images[0]
        with atomic_path(folder / f"{i:05d}.png") as tmp:
            image.save(tmp, format="PNG")


def attach_class_images(cfg, concepts, m: dict, acc) -> None:
    """Give each concept its class images and class prompt; the main process generates missing ones."""
    p = cfg.prior
    for concept in concepts:
        folder = class_dir(cfg, concept.class_word)
        prompt = p.prompt.format(class_word=concept.class_word)
        if acc.is_main_process:
            generate_class_images(m, folder, prompt, p.num_class_images, p.num_inference_steps,
                                  p.guidance_scale, cfg.resolution)
        acc.wait_for_everyone()
        concept.class_images = load_folder(folder)
        concept.class_prompt = prompt
