"""Stage 6: write the shipped files (by default into the installed cdvideo/toyworld/assets/): the model as a
diffusers StableDiffusionPipeline folder (float16 weights, SD1.5's tokenizer, a DDIM scheduler), the motion
adapter folder, the mask ControlNet (when its stage has run), the judge, and the personal instances' photos."""

from __future__ import annotations

import shutil
from pathlib import Path

import torch

from cdvideo.apps.worldbuild.common import SD_SCHEDULE, log
from cdvideo.data.files import atomic_folder
from cdvideo.models.architectures import tokenizer_dir
from cdvideo.toyworld.instances import write_photos


def run(work: Path, assets: Path) -> None:
    """The model, adapter, judge and photos from the stage outputs in `work` into `assets`."""
    from diffusers import (  # lazy: start-up time
        AutoencoderKL,
        ControlNetModel,
        DDIMScheduler,
        MotionAdapter,
        StableDiffusionPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextModel, CLIPTokenizer  # lazy: start-up time

    pipe = StableDiffusionPipeline(
        vae=AutoencoderKL.from_pretrained(str(work / "vae")),
        text_encoder=CLIPTextModel.from_pretrained(str(work / "text_encoder")),
        tokenizer=CLIPTokenizer.from_pretrained(str(tokenizer_dir())),
        unet=UNet2DConditionModel.from_pretrained(str(work / "unet")),
        scheduler=DDIMScheduler(**SD_SCHEDULE, set_alpha_to_one=False), safety_checker=None, feature_extractor=None,
        requires_safety_checker=False)
    assets.mkdir(parents=True, exist_ok=True)
    with atomic_folder(assets / "model") as d:  # a failed export leaves the old files
        pipe.to(torch.float16).save_pretrained(d)
        write_tokenizer(d / "tokenizer")
    adapter = MotionAdapter.from_pretrained(str(work / "motion_adapter"))
    with atomic_folder(assets / "adapter") as d:
        adapter.to(torch.float16).save_pretrained(d)
    if (work / "controlnet_mask").is_dir():  # the controlnet stage's (issue 30), once it has run
        controlnet = ControlNetModel.from_pretrained(str(work / "controlnet_mask"))
        with atomic_folder(assets / "controlnet_mask") as d:
            controlnet.to(torch.float16).save_pretrained(d)
    # the last judge stage's that ran: judge_motion (it reads the motion of every sweep the world draws), judge_twins
    # (it tells a moving object's body colour), judge_clips (it reads moving clips surely), judge
    judges = ("judge_motion", "judge_twins", "judge_clips", "judge")
    judge = next(p for p in (work / f"{s}.safetensors" for s in judges) if p.is_file())
    shutil.copyfile(judge, assets / "judge.safetensors")
    with atomic_folder(assets / "instances") as d:
        write_photos(d)
    size = sum(p.stat().st_size for p in assets.rglob("*.safetensors"))
    log(f"exported to {assets}: weights {size / 2**20:.1f} MiB")


def write_tokenizer(folder: Path) -> None:
    """SD1.5's own tokenizer files in `folder` (vocab.json, merges.txt, tokenizer_config.json), as the hub's SD1.5
    repositories hold them, in place of the tokenizer.json that `save_pretrained` writes: the same token ids (checked
    on every caption of the world), and `from_pretrained` reads them in 0.07 s instead of 0.3 s, on every load."""
    shutil.rmtree(folder)
    folder.mkdir()
    for name in ("vocab.json", "merges.txt", "tokenizer_config.json"):
        shutil.copyfile(tokenizer_dir() / name, folder / name)
