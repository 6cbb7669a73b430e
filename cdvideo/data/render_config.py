"""The settings of `cdvideo animate` and `cdvideo sample`: one prompt's (`Job`, diffusers' argument names) and one
command's (`Options`), with the valid range of each number."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Annotated, Optional, Union

from cdvideo.data.config import from_dict
from cdvideo.data.ranges import CLIP_FPS, GUIDANCE, INFERENCE_STEPS, SEED, SIZE, Range

MAX_FRAMES = 512  # FreeNoise holds the latents of every frame at once
FRAMES = Range(1, MAX_FRAMES)
PER_PROMPT = Range(1, 64)  # clips or images of one prompt and seed, rendered as one batch
CONTROL_SCALE = Range(0, 10)  # controlnet_conditioning_scale
IP_ADAPTER_SCALE = Range(0, 5)  # how strongly the image prompt conditions (diffusers' set_ip_adapter_scale)
MOTION_SCALE = Range(-10, 10)  # a motion LoRA's strength; below 0 pushes away from its motion


@dataclass
class Job:
    """One prompt's settings, with diffusers' argument names."""
    prompt: Union[str, dict[int, str]] = ""
    negative_prompt: Optional[str] = None
    seed: list[Annotated[int, SEED]] = field(default_factory=lambda: [42])
    num_frames: Annotated[int, FRAMES] = 16
    height: Optional[Annotated[int, SIZE]] = None  # None: the model's native size (512 for SD1.5, 64 for toyworld)
    width: Optional[Annotated[int, SIZE]] = None
    num_inference_steps: Annotated[int, INFERENCE_STEPS] = 25
    guidance_scale: Annotated[float, GUIDANCE] = 7.5
    num_videos_per_prompt: Annotated[int, PER_PROMPT] = 1
    num_images_per_prompt: Annotated[int, PER_PROMPT] = 1  # sample only
    fps: Annotated[int, CLIP_FPS] = 8
    video: Optional[str] = None  # video-to-video: the source clip (a video file, a GIF or a folder of frames)
    strength: Annotated[float, Range(0, 1, above=True)] = 0.8  # how much of the source is noised away (1: all)
    control_videos: list[str] = field(default_factory=list)  # one clip of condition frames per ControlNet
    keyframes: dict[int, str] = field(default_factory=dict)  # SparseCtrl: frame index -> image (RGB or scribble)
    ip_adapter_image: Optional[str] = None  # IP-Adapter: the image prompt


@dataclass
class Options:
    """Settings shared by all prompts of one command."""
    weights: list[str] = field(default_factory=list)
    model: Optional[str] = None
    revision: Optional[str] = None
    variant: Optional[str] = None
    adapter: Optional[str] = None
    scheduler: str = "ddim"
    scale: Annotated[float, Range(0, 1)] = 1.0
    force: bool = False
    output_dir: str = "outputs"
    formats: list[str] = field(default_factory=lambda: ["mp4", "gif"])
    device: Optional[str] = None
    dtype: Optional[str] = None
    cpu_offload: bool = False
    free_init: bool = False
    # (file, folder or hub id; scale)
    motion_loras: list[tuple[str, Annotated[float, MOTION_SCALE]]] = field(default_factory=list)
    # (folder, file or hub id; conditioning scale), each with its job's control video; several as diffusers allows
    controlnets: list[tuple[str, Annotated[float, CONTROL_SCALE]]] = field(default_factory=list)
    control_preprocess: list[str] = field(default_factory=list)  # per ControlNet: none (default) or canny
    sparsectrl: Optional[str] = None  # a SparseCtrl ControlNet (RGB or scribble) for the jobs' keyframes
    ip_adapter: Optional[str] = None  # an IP-Adapter (file with image_encoder/ beside it, hub path or short name)
    ip_adapter_scale: Annotated[float, IP_ADAPTER_SCALE] = 1.0
    decode_chunk_size: Annotated[int, Range(1, MAX_FRAMES)] = 16
    grid: bool = True
    # MP4/GIF/WebP enlarged this many times (nearest) for viewing; PNG frames stay raw
    upscale: Annotated[int, Range(1, 16)] = 1
    preset: Optional[str] = None  # few-step adapter preset (scheduler, LoRA); implied by --adapter lightning-4 etc.
    lcm_lora: Optional[str] = None  # a local AnimateLCM LoRA file for --preset animatelcm
    model_config: Optional[str] = None  # how to read a one-file base (sd15, tiny or a folder)


def check_options(opts: Options) -> None:
    """The ranges of options built in code (the web app's, a sidecar's), as those of a file or a flag are checked."""
    from_dict(Options, dataclasses.asdict(opts))
