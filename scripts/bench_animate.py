"""`cdvideo animate` against a plain diffusers AnimateDiffPipeline call, side by side, at SD1.5 + AnimateDiff v1-5-2
size (random weights).

    python scripts/bench_animate.py [--resolution 128] [--num-frames 8] [--steps 4] [--rounds 2]
    python scripts/bench_animate.py --strength 0.6     # video-to-video: AnimateDiffVideoToVideoPipeline both
    python scripts/bench_animate.py --controlnet       # one ControlNet (random, the base's shape) on a clip
    python scripts/bench_animate.py --sparsectrl       # SparseCtrl (RGB, random) on a first and a last keyframe
    python scripts/bench_animate.py --ip-adapter       # an image prompt (IP-Adapter in h94's layout, random)

Both render the same prompt with identical settings (DDIM with AnimateDiff's settings, guidance 7.5, VAE slicing,
decode chunk 16, CPU noise) and write MP4 + GIF (`--formats`); both are split the same way (load, text, denoise,
VAE decode, export; text and decode from the pipeline's step callback). Each run is its own process, cdvideo and
plain in turn, `--rounds` times; the fastest round of each counts. On a GPU both use float16 (`--dtype`).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROMPT = "a photo of a dog running on the beach"


def cdvideo_run(args: argparse.Namespace, out: Path, timer) -> None:
    from cdvideo.tasks.render import Job, Options, animate

    opts = Options(model=args.arch, output_dir=str(out), formats=args.formats.split(","), dtype=args.dtype,
                   controlnets=[(args.controlnet, 1.0)] if args.controlnet else [], sparsectrl=args.sparsectrl or None,
                   ip_adapter=args.ip_adapter or None)
    source = {"video": args.video, "strength": args.strength} if args.strength is not None else {}
    source.update({"control_videos": [args.video]} if args.controlnet else {})
    source.update({"keyframes": {0: args.image, args.num_frames - 1: args.image}} if args.sparsectrl else {})
    source.update({"ip_adapter_image": args.image} if args.ip_adapter else {})
    animate(opts, [Job(prompt=PROMPT, seed=[0], num_frames=args.num_frames, height=args.resolution,
                       width=args.resolution, num_inference_steps=args.steps, guidance_scale=7.5, **source)], timer)


def plain_run(args: argparse.Namespace, out: Path, timer) -> None:
    """What a diffusers user writes: components, AnimateDiffPipeline, call, export_to_video / export_to_gif."""
    import torch

    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = getattr(torch, args.dtype) if args.dtype else (torch.float16 if dev.type == "cuda" else torch.float32)
    with timer("load"):  # imports included, as cdvideo's load includes its own
        from diffusers import (
            AnimateDiffControlNetPipeline,
            AnimateDiffPipeline,
            AnimateDiffSparseControlNetPipeline,
            AnimateDiffVideoToVideoPipeline,
            ControlNetModel,
            DDIMScheduler,
            SparseControlNetModel,
        )
        from diffusers.utils import export_to_gif, export_to_video, load_image, load_video

        from cdvideo.models import architectures as tiny

        m = tiny.build_components(arch=args.arch)
        adapter = tiny.build_motion_adapter(arch=args.arch)
        sched = DDIMScheduler.from_config(m["scheduler"].config, beta_schedule="linear", clip_sample=False,
                                          timestep_spacing="linspace", steps_offset=1)
        cls = AnimateDiffControlNetPipeline if args.controlnet else AnimateDiffSparseControlNetPipeline \
            if args.sparsectrl else AnimateDiffVideoToVideoPipeline if args.strength is not None \
            else AnimateDiffPipeline
        net = {"controlnet": ControlNetModel.from_pretrained(args.controlnet)} if args.controlnet else \
            {"controlnet": SparseControlNetModel.from_pretrained(args.sparsectrl)} if args.sparsectrl else {}
        pipe = cls(**net, vae=m["vae"], text_encoder=m["text_encoder"], tokenizer=m["tokenizer"],
                                   unet=m["unet"], motion_adapter=adapter, scheduler=sched)
        if args.ip_adapter:  # diffusers' own loader: the weights file and image_encoder/ beside it
            ip = Path(args.ip_adapter)
            pipe.load_ip_adapter(str(ip.parent), subfolder="", weight_name=ip.name)
        pipe.to(dev, dtype)
        pipe.vae.enable_slicing()
        size = (args.resolution, args.resolution)
        frames = [f.convert("RGB").resize(size) for f in load_video(args.video)][:args.num_frames] \
            if args.video else None
        source = {"video": frames, "strength": args.strength} if args.strength is not None else \
            {"num_frames": args.num_frames, **({"conditioning_frames": frames} if args.controlnet else {})}
        image = load_image(args.image) if args.image else None
        source.update({"conditioning_frames": [image, image], "controlnet_frame_indices": [0, args.num_frames - 1]}
                      if args.sparsectrl else {})
        source.update({"ip_adapter_image": image} if args.ip_adapter else {})
    chunk = {} if args.sparsectrl else {"decode_chunk_size": 16}  # diffusers' SparseCtrl pipeline takes none
    with timer.pipeline() as callback:
        frames = pipe(prompt=PROMPT, **source, height=args.resolution, width=args.resolution,
                      num_inference_steps=args.steps, guidance_scale=7.5, **chunk, output_type="pil",
                      generator=torch.Generator("cpu").manual_seed(0), callback_on_step_end=callback).frames[0]
    formats = args.formats.split(",")
    with timer("export"):
        if "mp4" in formats:
            export_to_video(frames, str(out / "clip.mp4"), fps=8, macro_block_size=16)
        if "gif" in formats:
            export_to_gif(frames, str(out / "clip.gif"), fps=8)


def worker(args: argparse.Namespace) -> None:
    import torch

    from cdvideo.tasks.timing import StepTimer

    timer = StepTimer("cuda" if torch.cuda.is_available() else "cpu")
    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        (cdvideo_run if args.worker == "cdvideo" else plain_run)(args, Path(d), timer)
        total = time.perf_counter() - t0
    split = dict(timer.totals)
    split["other"] = max(total - sum(split.values()), 0.0)
    print("RESULT " + json.dumps({"total": total, "split": split}), flush=True)


def run_worker(kind: str, args: argparse.Namespace) -> dict:
    cmd = [sys.executable, __file__, "--worker", kind, "--resolution", str(args.resolution), "--num-frames",
           str(args.num_frames), "--steps", str(args.steps), "--arch", args.arch, "--formats", args.formats]
    cmd += ["--dtype", args.dtype] if args.dtype else []
    cmd += ["--video", args.video] if args.video else []
    cmd += ["--strength", str(args.strength)] if args.strength is not None else []
    cmd += ["--controlnet-folder", args.controlnet] if args.controlnet else []
    cmd += ["--sparsectrl-folder", args.sparsectrl] if args.sparsectrl else []
    cmd += ["--ip-adapter-file", args.ip_adapter] if args.ip_adapter else []
    cmd += ["--image", args.image] if args.image else []
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode or not lines:
        sys.exit(f"{kind} worker failed:\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def source_clip(path: str, frames: int, size: int) -> None:
    """A GIF of a bright square crossing a gray field, `frames` frames of `size` px at 8 fps."""
    import numpy as np
    from PIL import Image

    images = []
    for i in range(frames):
        a = np.full((size, size, 3), 90, np.uint8)
        x = i * (size - size // 4) // max(frames - 1, 1)
        a[size // 3:size // 3 + size // 4, x:x + size // 4] = 250
        images.append(Image.fromarray(a))
    images[0].save(path, save_all=True, append_images=images[1:], duration=125, loop=0)


def conditions(args: argparse.Namespace) -> None:
    """SparseCtrl (RGB) and IP-Adapter models of the base's shape (random weights) and the image both read, saved
    once for both arms."""
    from PIL import Image

    from cdvideo.models import architectures as tiny

    folder = Path(tempfile.mkdtemp())
    if args.sparsectrl or args.ip_adapter:
        args.image = str(folder / "keyframe.png")
        Image.new("RGB", (args.resolution, args.resolution), (200, 60, 40)).save(args.image)
    if args.sparsectrl:
        from diffusers import SparseControlNetModel, UNet2DConditionModel

        unet = tiny.build_components(arch=args.arch)["unet"]  # from_unet edits the block types: a list, not a tuple
        unet = UNet2DConditionModel.from_config({**unet.config, "down_block_types": list(unet.config.down_block_types)})
        args.sparsectrl = str(folder / "sparsectrl")
        SparseControlNetModel.from_unet(unet, conditioning_channels=4).save_pretrained(args.sparsectrl)
    if args.ip_adapter:
        args.ip_adapter = str(tiny.save_ip_adapter(folder / "ip-adapter", arch=args.arch))


def report(args: argparse.Namespace) -> None:
    import torch

    device = torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU ({torch.get_num_threads()} threads)"
    best: dict[str, dict] = {}
    if args.strength is not None or args.controlnet:  # a clip of the clip's length and size: source or condition
        args.video = str(Path(tempfile.mkdtemp()) / "source.gif")
        source_clip(args.video, args.num_frames, args.resolution)
    if args.controlnet:  # a ControlNet of the base's shape (random weights), saved once, read by both arms
        from diffusers import ControlNetModel

        from cdvideo.models import architectures as tiny

        args.controlnet = str(Path(tempfile.mkdtemp()) / "controlnet")
        ControlNetModel.from_unet(tiny.build_components(arch=args.arch)["unet"]).save_pretrained(args.controlnet)
    conditions(args)
    for _ in range(args.rounds):
        for kind in ("cdvideo", "plain"):
            r = run_worker(kind, args)
            if kind not in best or r["total"] < best[kind]["total"]:
                best[kind] = r
    c, p = best["cdvideo"], best["plain"]
    v2v = f", video-to-video at strength {args.strength}" if args.strength is not None else ""
    v2v += ", one ControlNet on a clip" if args.controlnet else ""
    v2v += ", SparseCtrl on 2 keyframes" if args.sparsectrl else ""
    v2v += ", an IP-Adapter image prompt" if args.ip_adapter else ""
    print(f"# bench_animate: {device}, torch {torch.__version__}, {args.num_frames} frames {args.resolution} px, "
          f"{args.steps} steps, guidance 7.5, {args.arch} (random weights){v2v}, {time.strftime('%Y-%m-%d')}")
    print(f"{'section':12s} {'cdvideo':>9s} {'plain':>9s} {'ratio':>7s}")
    for name in ("load", "text", "denoise", "vae_decode", "export", "other"):
        a, b = c["split"].get(name, 0.0), p["split"].get(name, 0.0)
        print(f"{name:12s} {a:8.2f}s {b:8.2f}s {a / b if b else float('nan'):6.3f}x")
    print(f"{'total':12s} {c['total']:8.2f}s {p['total']:8.2f}s {c['total'] / p['total']:6.3f}x")
    render = lambda r: sum(r["split"].get(k, 0.0) for k in ("text", "denoise", "vae_decode"))  # noqa: E731
    print(f"{'pipeline':12s} {render(c):8.2f}s {render(p):8.2f}s {render(c) / render(p):6.3f}x  "
          "(text + denoise + decode)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--resolution", type=int, default=128)
    p.add_argument("--num-frames", type=int, default=8)
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--arch", default="sd15-random", choices=["sd15-random", "tiny"], help="tiny: a quick check")
    p.add_argument("--formats", default="mp4,gif", help="what both export: mp4,gif (gif alone where no ffmpeg)")
    p.add_argument("--dtype", help="float16 or bfloat16 (default: float16 on GPU, float32 on CPU)")
    p.add_argument("--strength", type=float, help="video-to-video at this strength (both arms restyle one clip)")
    p.add_argument("--controlnet", action="store_true", help="one ControlNet (random, the base's shape) on a clip")
    p.add_argument("--controlnet-folder", dest="controlnet_folder", help=argparse.SUPPRESS)  # for the workers
    p.add_argument("--sparsectrl", action="store_true", help="SparseCtrl (RGB, random) on 2 keyframes")
    p.add_argument("--sparsectrl-folder", dest="sparsectrl_folder", help=argparse.SUPPRESS)  # for the workers
    p.add_argument("--ip-adapter", action="store_true", help="an IP-Adapter image prompt (random, h94's layout)")
    p.add_argument("--ip-adapter-file", dest="ip_adapter_file", help=argparse.SUPPRESS)  # for the workers
    p.add_argument("--image", help=argparse.SUPPRESS)  # the keyframe / image prompt, passed to the workers
    p.add_argument("--video", help=argparse.SUPPRESS)  # the source clip, passed to the workers
    p.add_argument("--worker", choices=["cdvideo", "plain"], help=argparse.SUPPRESS)
    args = p.parse_args()
    args.controlnet = args.controlnet_folder or args.controlnet
    args.sparsectrl = args.sparsectrl_folder or args.sparsectrl
    args.ip_adapter = args.ip_adapter_file or args.ip_adapter
    if args.worker:
        worker(args)
    else:
        report(args)


if __name__ == "__main__":
    main()
