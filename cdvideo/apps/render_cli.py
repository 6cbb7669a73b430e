"""The `animate` and `sample` commands' arguments (diffusers' names, both spellings) and what they run."""

from __future__ import annotations

import argparse

from cdvideo.data.control import PREPROCESS
from cdvideo.data.ranges import Flag, Range
from cdvideo.data.render_config import MOTION_SCALE, Job, Options
from cdvideo.errors import CdvideoError

RANK = Range(1, 1024)  # `export --rank`: a LoRA's rank


def opt(p: argparse.ArgumentParser, name: str, **kw) -> None:
    """An option spelled both --num-frames and --num_frames (diffusers' scripts use underscores)."""
    flags = [f"--{name.replace('_', '-')}"] + ([f"--{name}"] if "_" in name else [])
    p.add_argument(*flags, **{"dest": name, **kw})


def render_args(p: argparse.ArgumentParser, video: bool) -> None:
    """`cdvideo animate`'s flags (video) or `cdvideo sample`'s."""
    base_args(p)
    if video:
        clip_args(p)
        conditioning_args(p)
        output_args(p)
    else:
        opt(p, "num_images_per_prompt", type=Flag.of(Job, "num_images_per_prompt"))
        p.add_argument("--no-grid", dest="grid", action="store_false")


def base_args(p: argparse.ArgumentParser) -> None:
    """What both commands take: the weights, prompts, base model, sampler and device."""
    p.add_argument("--weights", action="append", default=[], help="weights file from `cdvideo train` "
                   "(repeat to compose several on the fly); without it the base model renders")
    p.add_argument("--prompt", help="one prompt")
    p.add_argument("--prompts", help="YAML list of prompt entries (with per-prompt settings) or a text file")
    p.add_argument("--sidecar", help="re-render a clip or image from its sidecar JSON")
    p.add_argument("--model", help="base model: hub id, folder, one-file .safetensors/.ckpt, toyworld (default: the "
                   "weights file's base)")
    opt(p, "model_config", help="how to read a one-file base: sd15 (default), tiny, or a diffusers folder")
    p.add_argument("--revision")
    p.add_argument("--variant")
    p.add_argument("--scheduler", default="ddim", help="ddim, euler, euler_a, dpmpp, pndm, lms, ddpm")
    p.add_argument("--scale", type=Flag.of(Options, "scale"), default=1.0,
                   help="0..1 blend from base (0) to tuned (1) K/V")
    p.add_argument("--force", action="store_true", help="use weights on a different same-shaped base")
    opt(p, "negative_prompt")
    p.add_argument("--seed", type=Flag.of(Job, "seed"), nargs="+", help="one or more seeds (default 42)")
    for name in ("height", "width", "num_inference_steps", "guidance_scale"):
        opt(p, name, type=Flag.of(Job, name))
    opt(p, "output_dir", default="outputs")
    p.add_argument("--device", help="cuda, cpu, cuda:1 (default: cuda when present)")
    p.add_argument("--dtype", help="float16, bfloat16 or float32 (default: float16 on GPU, float32 on CPU)")
    opt(p, "cpu_offload", action="store_true", help="model CPU offload on GPU")


def clip_args(p: argparse.ArgumentParser) -> None:
    """A clip's length and rate, and video-to-video's source."""
    for name in ("num_frames", "num_videos_per_prompt", "fps"):
        opt(p, name, type=Flag.of(Job, name))
    p.add_argument("--video", metavar="CLIP", help="video-to-video: restyle this clip (a video file, a GIF or a "
                   "folder of frames), read at --fps to --num-frames frames at the clip's size")
    p.add_argument("--strength", type=Flag.of(Job, "strength"), help="video-to-video: how much of the source "
                   "is noised away, 0 to 1 (default 0.8; lower keeps more of it)")


def conditioning_args(p: argparse.ArgumentParser) -> None:
    """ControlNets, SparseCtrl, IP-Adapter."""
    p.add_argument("--controlnet", action="append", default=[], metavar="NAME_OR_PATH", help="a ControlNet: a "
                   "diffusers folder, a .safetensors file or a hub id; repeat for several, each with its "
                   "--control-video")
    opt(p, "control_video", dest="control_videos", action="append", default=[], metavar="CLIP",
        help="condition frames for the ControlNet in the same position (a clip or a folder of frames)")
    opt(p, "control_scale", dest="control_scales", action="append", default=[], metavar="SCALE",
        type=Flag.of(Options, "controlnets"), help="each ControlNet's conditioning scale (default 1.0)")
    opt(p, "control_preprocess", action="append", default=[], choices=PREPROCESS,
        help="each control clip: none (its frames are the condition) or canny (edges drawn with OpenCV)")
    p.add_argument("--sparsectrl", metavar="NAME_OR_PATH", help="a SparseCtrl ControlNet (RGB or scribble: a "
                   "diffusers folder, a .safetensors file or a hub id) conditioning --keyframes")
    p.add_argument("--keyframes", type=keyframes_arg, metavar="I:IMAGE,...", help="SparseCtrl's keyframes: "
                   "frame index and image, e.g. 0:first.png,15:last.png")
    opt(p, "ip_adapter", metavar="NAME_OR_PATH", help="an IP-Adapter for an image prompt: a weights file with its "
        "image encoder in image_encoder/ beside it (h94/IP-Adapter's layout), a hub path such as "
        "h94/IP-Adapter/models/ip-adapter_sd15.safetensors, or sd15, sd15-light, plus-sd15")
    opt(p, "ip_adapter_image", metavar="IMAGE", help="the image prompt the IP-Adapter reads")
    opt(p, "ip_adapter_scale", type=Flag.of(Options, "ip_adapter_scale"), default=1.0,
        help="how strongly the image prompt conditions (default 1.0; 0 leaves the text alone)")


def output_args(p: argparse.ArgumentParser) -> None:
    """The motion adapter and its LoRAs, few-step presets, the written formats."""
    p.add_argument("--adapter", help="motion adapter: v1-5-2 (default), v1-5-3, v1-5, animatelcm, "
                   "lightning-1/2/4/8, a hub id, a folder, or one file (an original AnimateDiff motion module "
                   "or a diffusers state dict)")
    p.add_argument("--preset", help="few-step settings for a local adapter file: animatelcm, lightning-1/2/4/8")
    opt(p, "lcm_lora", help="a local AnimateLCM LoRA file for --preset animatelcm")
    p.add_argument("--format", default="mp4,gif", help="comma list of mp4, gif, webp, png")
    opt(p, "free_init", action="store_true", help="FreeInit noise re-initialisation (3 iterations)")
    opt(p, "motion_lora", action="append", default=[], type=motion_lora_arg, metavar="FILE[:SCALE]",
         help="a motion LoRA (cdvideo train-motion, AnimateDiff's or diffusers' layout, a folder or a hub id) "
         "with its scale (default 1); repeat to stack several")
    opt(p, "decode_chunk_size", type=Flag.of(Options, "decode_chunk_size"), default=16)
    p.add_argument("--upscale", type=Flag.of(Options, "upscale"), default=1, help="enlarge MP4/GIF/WebP N "
                   "times (nearest) for viewing small clips; PNG frames stay raw")


def controlnet_args(args: argparse.Namespace) -> list[tuple[str, float]]:
    """(ControlNet, scale) pairs from --controlnet and --control-scale (1.0 where not given)."""
    if len(args.control_scales) > len(args.controlnet):
        raise CdvideoError(f"{len(args.control_scales)} --control-scale for {len(args.controlnet)} --controlnet; "
                           "give at most one per ControlNet")
    scales = [*args.control_scales, *[1.0] * (len(args.controlnet) - len(args.control_scales))]
    return list(zip(args.controlnet, scales))


def keyframes_arg(text: str) -> dict[int, str]:
    """'0:first.png,15:last.png' -> {0: 'first.png', 15: 'last.png'}."""
    out = {}
    for item in text.split(","):
        index, _, path = item.partition(":")
        if not index.strip().isdigit() or not path:
            raise argparse.ArgumentTypeError(f"{item!r}: write INDEX:IMAGE, e.g. 0:first.png,15:last.png")
        out[int(index)] = path
    return out


def rank_arg(text: str) -> int | str:
    """`export --rank`: a LoRA rank (1 to 1,024) or `full` for an exact factorisation."""
    return text if text == "full" else Flag(int, RANK)(text)


def motion_lora_arg(text: str) -> tuple[str, float]:
    """'motion.safetensors:0.8' -> ('motion.safetensors', 0.8); without ':SCALE' the scale is 1."""
    ref, _, scale = text.rpartition(":")
    try:
        value = float(scale) if ref else 1.0
    except ValueError:
        return text, 1.0  # a colon inside the path (C:\...)
    if not MOTION_SCALE.holds(value):
        raise argparse.ArgumentTypeError(f"{text}: scale {scale} is out of range; give {MOTION_SCALE}")
    return (ref, value) if ref else (text, value)


JOB_KEYS = ("negative_prompt", "seed", "num_frames", "height", "width", "num_inference_steps", "guidance_scale",
            "num_videos_per_prompt", "num_images_per_prompt", "fps", "video", "strength", "control_videos",
            "keyframes", "ip_adapter_image")


def render(args: argparse.Namespace, video: bool) -> None:
    from cdvideo.data.clips import read_sidecar  # lazy: start-up time (the command's modules load torch)
    from cdvideo.tasks import render  # lazy: start-up time (the command's modules load torch)

    if args.sidecar:
        opts, jobs = render.from_sidecar(read_sidecar(args.sidecar), args.output_dir)
    else:
        defaults = {} if video else dict(render.IMAGE_DEFAULTS)
        preset = render.active_preset(args.preset, args.adapter) if video else None
        if preset:  # the steps and guidance the adapter was distilled for, unless given
            from cdvideo.pipelines import presets  # lazy: start-up time (the command's modules load torch)

            p = presets.get(preset)  # an unknown --preset is an error naming the choices
            defaults.update(num_inference_steps=p.num_inference_steps, guidance_scale=p.guidance_scale)
        if getattr(args, "strength", None) is not None and not (args.video or args.prompts):
            raise CdvideoError("--strength is for video-to-video: give the source clip with --video")
        defaults.update({k: getattr(args, k) for k in JOB_KEYS if getattr(args, k, None) is not None})
        jobs = render.load_jobs(args.prompt, args.prompts, defaults)
        opts = render.Options(
            weights=args.weights, model=args.model, revision=args.revision, variant=args.variant,
            scheduler=args.scheduler, scale=args.scale, force=args.force, output_dir=args.output_dir,
            device=args.device, dtype=args.dtype, cpu_offload=args.cpu_offload, model_config=args.model_config)
        if video:
            opts.adapter, opts.formats, opts.free_init = args.adapter, args.format.split(","), args.free_init
            opts.motion_loras, opts.decode_chunk_size = args.motion_lora, args.decode_chunk_size
            opts.upscale, opts.preset, opts.lcm_lora = args.upscale, args.preset, args.lcm_lora
            opts.controlnets, opts.control_preprocess = controlnet_args(args), args.control_preprocess
            opts.sparsectrl, opts.ip_adapter, opts.ip_adapter_scale = args.sparsectrl, args.ip_adapter, \
                args.ip_adapter_scale
        else:
            opts.grid = args.grid
    written = (render.animate if video else render.sample)(opts, jobs)
    print("wrote " + ", ".join(str(p) for p in written))
