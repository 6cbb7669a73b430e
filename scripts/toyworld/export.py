"""Stage 6: write the shipped files into cdvideo/toyworld/assets/: the model as a diffusers StableDiffusionPipeline
folder (float16 weights, SD1.5's tokenizer, a DDIM scheduler), the motion adapter folder, the judge, and the
personal instances' photos."""

from __future__ import annotations

import shutil
from pathlib import Path

import torch
from common import ASSETS, SD_SCHEDULE, log

from cdvideo.models.architectures import tokenizer_dir
from cdvideo.toyworld.instances import write_photos


def run(work: Path) -> None:
    from diffusers import AutoencoderKL, DDIMScheduler, MotionAdapter, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    pipe = StableDiffusionPipeline(
        vae=AutoencoderKL.from_pretrained(str(work / "vae")),
        text_encoder=CLIPTextModel.from_pretrained(str(work / "text_encoder")),
        tokenizer=CLIPTokenizer.from_pretrained(str(tokenizer_dir())),
        unet=UNet2DConditionModel.from_pretrained(str(work / "unet")),
        scheduler=DDIMScheduler(**SD_SCHEDULE, set_alpha_to_one=False), safety_checker=None, feature_extractor=None,
        requires_safety_checker=False)
    replace_folder(ASSETS / "model", lambda d: pipe.to(torch.float16).save_pretrained(d))
    adapter = MotionAdapter.from_pretrained(str(work / "motion_adapter"))
    replace_folder(ASSETS / "adapter", lambda d: adapter.to(torch.float16).save_pretrained(d))
    shutil.copyfile(work / "judge.safetensors", ASSETS / "judge.safetensors")
    replace_folder(ASSETS / "instances", write_photos)
    size = sum(p.stat().st_size for p in ASSETS.rglob("*.safetensors"))
    log(f"exported to {ASSETS}: weights {size / 2**20:.1f} MiB")


def replace_folder(final: Path, write) -> None:
    """Write into a temporary folder, then swap it in, so a failed export leaves the old files."""
    tmp = final.with_name(f".{final.name}.tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    write(tmp)
    if final.exists():
        shutil.rmtree(final)
    tmp.rename(final)
