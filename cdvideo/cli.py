"""The `cdvideo` command: thin argument parsing over the package's functions."""

from __future__ import annotations

import argparse
import logging
import sys

from .errors import CdvideoError


def _train(args: argparse.Namespace) -> None:
    from .config import load_train_config
    from .train import train

    cfg = load_train_config(args.config, args.overrides)
    path = train(cfg)
    if path is not None:  # the main process of a multi-process run
        print(f"wrote {path}")


def _opt(p: argparse.ArgumentParser, name: str, **kw) -> None:
    """An option spelled both --num-frames and --num_frames (diffusers' scripts use underscores)."""
    flags = [f"--{name.replace('_', '-')}"] + ([f"--{name}"] if "_" in name else [])
    p.add_argument(*flags, dest=name, **kw)


def _render_args(p: argparse.ArgumentParser, video: bool) -> None:
    p.add_argument("--weights", action="append", default=[], help="weights file from `cdvideo train` "
                   "(repeat to compose several on the fly); without it the base model renders")
    p.add_argument("--prompt", help="one prompt")
    p.add_argument("--prompts", help="YAML list of prompt entries (with per-prompt settings) or a text file")
    p.add_argument("--sidecar", help="re-render a clip or image from its sidecar JSON")
    p.add_argument("--model", help="base model (default: the weights file's base)")
    p.add_argument("--revision")
    p.add_argument("--variant")
    p.add_argument("--scheduler", default="ddim", help="ddim, euler, euler_a, dpmpp, pndm, lms, ddpm")
    p.add_argument("--scale", type=float, default=1.0, help="0..1 blend from base (0) to tuned (1) K/V")
    p.add_argument("--force", action="store_true", help="use weights on a different same-shaped base")
    _opt(p, "negative_prompt")
    p.add_argument("--seed", type=int, nargs="+", help="one or more seeds (default 42)")
    _opt(p, "height", type=int)
    _opt(p, "width", type=int)
    _opt(p, "num_inference_steps", type=int)
    _opt(p, "guidance_scale", type=float)
    _opt(p, "output_dir", default="outputs")
    p.add_argument("--device", help="cuda, cpu, cuda:1 (default: cuda when present)")
    p.add_argument("--dtype", help="float16, bfloat16 or float32 (default: float16 on GPU, float32 on CPU)")
    _opt(p, "cpu_offload", action="store_true", help="model CPU offload on GPU")
    if video:
        _opt(p, "num_frames", type=int)
        _opt(p, "num_videos_per_prompt", type=int)
        p.add_argument("--fps", type=int)
        p.add_argument("--adapter", help="motion adapter: v1-5-2 (default), v1-5-3, v1-5, a hub id or a folder")
        p.add_argument("--format", default="mp4,gif", help="comma list of mp4, gif, webp, png")
        _opt(p, "free_init", action="store_true", help="FreeInit noise re-initialisation (3 iterations)")
        _opt(p, "motion_lora", help="motion LoRA hub id or folder (needs peft)")
        _opt(p, "decode_chunk_size", type=int, default=16)
    else:
        _opt(p, "num_images_per_prompt", type=int)
        p.add_argument("--no-grid", dest="grid", action="store_false")


JOB_KEYS = ("negative_prompt", "seed", "num_frames", "height", "width", "num_inference_steps", "guidance_scale",
            "num_videos_per_prompt", "num_images_per_prompt", "fps")


def _render(args: argparse.Namespace, video: bool) -> None:
    from . import render
    from .export import read_sidecar

    if args.sidecar:
        opts, jobs = render.from_sidecar(read_sidecar(args.sidecar), args.output_dir)
    else:
        defaults = {} if video else {"num_inference_steps": 100, "guidance_scale": 6.0}
        defaults.update({k: getattr(args, k) for k in JOB_KEYS if getattr(args, k, None) is not None})
        jobs = render.load_jobs(args.prompt, args.prompts, defaults)
        opts = render.Options(
            weights=args.weights, model=args.model, revision=args.revision, variant=args.variant,
            scheduler=args.scheduler, scale=args.scale, force=args.force, output_dir=args.output_dir,
            device=args.device, dtype=args.dtype, cpu_offload=args.cpu_offload)
        if video:
            opts.adapter, opts.formats, opts.free_init = args.adapter, args.format.split(","), args.free_init
            opts.motion_lora, opts.decode_chunk_size = args.motion_lora, args.decode_chunk_size
        else:
            opts.grid = args.grid
    written = (render.animate if video else render.sample)(opts, jobs)
    print("wrote " + ", ".join(str(p) for p in written))


def _compose(args: argparse.Namespace) -> None:
    from .compose import compose_files

    path = compose_files(args.files, args.output, args.method, args.rename, args.model, args.overwrite)
    print(f"wrote {path}")


def _drift(args: argparse.Namespace) -> None:
    from .drift_report import drift

    written = drift(args.weights, args.output, args.phrases, args.model)
    print("wrote " + ", ".join(map(str, written)))


def _eval(args: argparse.Namespace) -> None:
    from .evaluate import EvalOptions, evaluate

    render = {k: getattr(args, k) for k in ("model", "adapter", "num_inference_steps", "guidance_scale", "height",
                                            "width", "num_frames", "device", "dtype") if getattr(args, k) is not None}
    opts = EvalOptions(output_dir=args.output_dir, weights=args.weights, generated=args.generated,
                       references=args.references, prompts=args.prompts, seeds=args.seeds, video=args.video,
                       metrics=args.metrics.split(","), clip_model=args.clip_model, dino_model=args.dino_model,
                       blip_model=args.blip_model, render=render)
    written = evaluate(opts)
    if written:
        print("wrote " + ", ".join(map(str, written)))


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="cdvideo", description="ClassDiffusion personalization of Stable Diffusion 1.5, rendered as "
        "video through AnimateDiff. Start with: cdvideo train --config configs/train/tiny.yaml")
    parser.add_argument("--version", action="version", version=f"cdvideo {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("train", help="personalize SD1.5 on a few photos (ClassDiffusion)")
    p.add_argument("--config", help="YAML config, e.g. configs/train/dog.yaml")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="override config keys, e.g. max_steps=100")
    p.set_defaults(func=_train)
    p = sub.add_parser("compose", help="merge single-concept weights files into one multi-concept file")
    p.add_argument("files", nargs="+", help="weights files from `cdvideo train`")
    p.add_argument("-o", "--output", required=True, help="the merged weights file")
    p.add_argument("--method", default="constrained", choices=["constrained", "average"],
                   help="constrained: Custom Diffusion's closed form (default); average: mean of the deltas")
    p.add_argument("--rename", action="append", default=[], metavar="FILE:OLD=NEW",
                   help="rename a token of one file, e.g. b:sks=zwx (FILE: file name stem or position)")
    p.add_argument("--model", help="base model (default: the files' base)")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=_compose)
    p = sub.add_parser("drift", help="plot where the personal token sits among its class (paper's Alg. 1)")
    p.add_argument("--weights", action="append", default=[], help="weights file or training checkpoint folder; "
                   "repeat to compare runs (e.g. with and without SPL) or steps")
    p.add_argument("--phrases", help="text file of adjectives, one per line (default: ~70 bundled)")
    p.add_argument("--model", help="base model (default: the first file's base)")
    p.add_argument("-o", "--output", default="drift/drift", help="output path without suffix")
    p.set_defaults(func=_drift)
    p = sub.add_parser("eval", help="score personalization: CLIP-T, CLIP-I, DINO-I, BLIP-T (+ temporal for clips)")
    p.add_argument("--weights", action="append", default=[], help="weights file(s) to generate samples with")
    p.add_argument("--generated", help="score existing images/clips of cdvideo sample/animate (their sidecars)")
    p.add_argument("--references", help="folder of the subject's real photos (default: the training images)")
    p.add_argument("--prompts", default="dreambench", help="dreambench (25 prompts by class) or a text file")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3], help="samples per prompt, by seed")
    p.add_argument("--video", action="store_true", help="generate clips with AnimateDiff instead of images")
    p.add_argument("--metrics", default="clip_t,clip_i,dino_i,blip_t", help="comma list; temporal is added "
                   "for clips")
    _opt(p, "clip_model", help="default openai/clip-vit-base-patch32")
    _opt(p, "dino_model", help="default facebook/dino-vits16")
    _opt(p, "blip_model", help="default Salesforce/blip-itm-large-coco; Salesforce/blip2-itm-vit-g for BLIP-2")
    _opt(p, "output_dir", default="eval")
    for name, kind in (("model", str), ("adapter", str), ("num_inference_steps", int), ("guidance_scale", float),
                       ("height", int), ("width", int), ("num_frames", int), ("device", str), ("dtype", str)):
        _opt(p, name, type=kind, help=argparse.SUPPRESS)
    p.set_defaults(func=_eval)
    p = sub.add_parser("animate", help="render personalized clips with AnimateDiff (MP4 + GIF)")
    _render_args(p, video=True)
    p.set_defaults(func=lambda a: _render(a, video=True))
    p = sub.add_parser("sample", help="render personalized still images")
    _render_args(p, video=False)
    p.set_defaults(func=lambda a: _render(a, video=False))
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except CdvideoError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; continue a training run with resume=latest", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
