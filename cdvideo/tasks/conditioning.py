"""What conditions a clip besides its prompt, read and checked before anything renders: a video-to-video source,
ControlNets' condition clips, SparseCtrl's keyframes and an IP-Adapter's image prompt, as diffusers' arguments."""

from __future__ import annotations

import torch
from PIL import Image

from cdvideo.data.control import control_frames, keyframe, read_image
from cdvideo.data.references import read_clip
from cdvideo.data.render_config import Job, Options
from cdvideo.errors import CdvideoError
from cdvideo.models.controlnet import check_fits, load_controlnet
from cdvideo.models.ip_adapter import IPAdapter, load_ip_adapter
from cdvideo.models.ip_adapter import check_fits as check_ip_fits

FREE_NOISE = {"context_length": 16, "context_stride": 4}  # FreeNoise's sliding window over longer clips
FREE_INIT = {"num_iters": 3, "use_fast_sampling": False}  # `--free-init`: FreeInit's noise re-initialisation


def read_source(job: Job) -> list[Image.Image] | None:
    """A job's video-to-video source as frames at the job's fps, count and size (None without one)."""
    if job.video is None:
        return None
    clip = read_clip(job.video, job.num_frames, job.fps, job.width, job.height, "source video")  # (F, H, W, 3)
    return [Image.fromarray(frame) for frame in clip]


def load_controlnets(refs: list[str], m: dict, model: str, dtype: torch.dtype, sparse: bool = False) -> list:
    """Each ControlNet (SparseCtrl's when `sparse`), loaded and checked to fit the base."""
    nets = [load_controlnet(ref, dtype, sparse) for ref in refs]
    for net, ref in zip(nets, refs):
        check_fits(net, m["unet"], vae_factor(m), ref, model)
    return nets


def vae_factor(m: dict) -> int:
    """How many pixels a latent spans on a side: 2 per VAE down block after the first (8 for SD1.5)."""
    return 2 ** (len(m["vae"].config.block_out_channels) - 1)


def preprocessing(opts: Options) -> list[str]:
    """Each ControlNet's preprocessing of its control clip (none unless given)."""
    n = len(opts.controlnets)
    if len(opts.control_preprocess) > n:
        raise CdvideoError(f"{len(opts.control_preprocess)} --control-preprocess for {n} --controlnet; give at most "
                           "one per ControlNet")
    return [*opts.control_preprocess, *["none"] * (n - len(opts.control_preprocess))]


def load_ip(ref: str | None, m: dict, model: str, dtype: torch.dtype) -> IPAdapter | None:
    """The IP-Adapter (None without one), loaded and checked to fit the base."""
    if ref is None:
        return None
    ip = load_ip_adapter(ref, dtype)
    check_ip_fits(ip, m["unet"], ref, model)
    return ip


def check_controls(job: Job, opts: Options) -> None:
    """One control clip per ControlNet, at most one preprocessing each, keyframes with SparseCtrl and an image
    prompt with an IP-Adapter."""
    if bool(job.ip_adapter_image) != bool(opts.ip_adapter):
        raise CdvideoError("--ip-adapter and --ip-adapter-image go together: give both (the adapter reads the image)")
    if bool(job.keyframes) != bool(opts.sparsectrl):
        raise CdvideoError("--keyframes and --sparsectrl go together: give both (SparseCtrl conditions keyframes)")
    if opts.sparsectrl and (job.video or opts.controlnets or job.num_frames > FREE_NOISE["context_length"]
                            or isinstance(job.prompt, dict)):
        raise CdvideoError(f"--sparsectrl renders text to video of at most {FREE_NOISE['context_length']} frames "
                           "(diffusers' SparseCtrl pipeline): without --video, --controlnet or a prompt schedule")
    if any(not 0 <= k < job.num_frames for k in job.keyframes):
        raise CdvideoError(f"--keyframes {sorted(job.keyframes)}: a keyframe index must lie in [0, {job.num_frames})")
    if len(job.control_videos) != len(opts.controlnets):
        raise CdvideoError(f"give one --control-video per --controlnet ({len(opts.controlnets)} ControlNet(s), "
                           f"{len(job.control_videos)} control video(s))")
    preprocessing(opts)


def read_controls(job: Job, opts: Options) -> dict:
    """diffusers' conditioning arguments for a job: the image prompt, each ControlNet's condition frames and scale,
    or SparseCtrl's keyframes ({} without any)."""
    ip = {"ip_adapter_image": read_image(job.ip_adapter_image, "IP-Adapter image")} if job.ip_adapter_image else {}
    return {**ip, **_control_frames(job, opts)}


def _control_frames(job: Job, opts: Options) -> dict:
    if job.keyframes:  # SparseCtrl: the keyframe images at the clip's size, and where they sit
        indices = sorted(job.keyframes)
        return {"conditioning_frames": [keyframe(job.keyframes[k], job.width, job.height) for k in indices],
                "controlnet_frame_indices": indices}
    if not opts.controlnets:
        return {}
    frames = [control_frames(v, job.num_frames, job.fps, job.width, job.height, pre)
              for v, pre in zip(job.control_videos, preprocessing(opts))]
    scales = [scale for _, scale in opts.controlnets]
    return {"conditioning_frames": frames if len(frames) > 1 else frames[0],
            "controlnet_conditioning_scale": scales if len(scales) > 1 else scales[0]}


