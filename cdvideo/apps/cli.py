"""The `cdvideo` command: thin argument parsing over the package's functions."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import traceback
from pathlib import Path

from cdvideo.apps.render_cli import opt, rank_arg, render, render_args
from cdvideo.data.files import write_fault
from cdvideo.data.ranges import Flag, Parser, Range
from cdvideo.data.render_config import Job
from cdvideo.errors import CdvideoError


def _train(args: argparse.Namespace) -> None:
    from cdvideo.data.config import load_train_config  # lazy: start-up time (the command's modules load torch)
    from cdvideo.tasks.train import train  # lazy: start-up time (the command's modules load torch)

    cfg = load_train_config(args.config, args.overrides)
    path = train(cfg)
    if path is not None:  # the main process of a multi-process run
        print(f"wrote {path}")


def _train_motion(args: argparse.Namespace) -> None:
    from cdvideo.data.motion_config import load_motion_config  # lazy: start-up time (the modules load torch)
    from cdvideo.tasks.train_motion import train_motion  # lazy: start-up time (the command's modules load torch)

    path = train_motion(load_motion_config(args.config, args.overrides))
    print(f"wrote {path} (AnimateDiff's layout: ComfyUI-AnimateDiff-Evolved, sd-webui-animatediff) and "
          f"{path.parent / 'diffusers'} (pipe.load_lora_weights); render with cdvideo animate --motion-lora {path}")


def _import(args: argparse.Namespace) -> None:
    from cdvideo.tasks.importer import import_weights  # lazy: start-up time (the command's modules load torch)

    path = import_weights(args.source, args.output, args.model, args.class_word or "", args.token, args.model_config,
                          args.overwrite)
    print(f"wrote {path}")


def _export(args: argparse.Namespace) -> None:
    from cdvideo.data.files import file_stem  # lazy: start-up time (the command's modules load torch)
    from cdvideo.tasks.exporter import USAGE, export_weights  # lazy: start-up time (the command's modules load torch)

    written, report = export_weights(args.weights, args.format, args.output, args.rank, args.single_file, args.model,
                                     args.model_config, args.overwrite)
    for name, err in report.get("errors", {}).items():
        print(f"  {name}: relative error {err:.2e}")
    if "total_error" in report:
        print(f"rank {report['rank']}: total relative error {report['total_error']:.3e}")
    print("wrote " + ", ".join(map(str, written)))
    for token in report["tokens"]:  # what to type in each tool's prompt (a file name must be valid everywhere)
        print(USAGE[args.format].format(token=token, emb=file_stem(token), lora=written[0].name,
                                        stem=written[0].stem))


def _compose(args: argparse.Namespace) -> None:
    from cdvideo.tasks.compose import compose_files  # lazy: start-up time (the command's modules load torch)

    path = compose_files(args.files, args.output, args.method, args.rename, args.model, args.overwrite)
    print(f"wrote {path}")


def _drift(args: argparse.Namespace) -> None:
    from cdvideo.tasks.drift import drift  # lazy: start-up time (the command's modules load torch)

    written = drift(args.weights, args.output, args.phrases, args.model)
    print("wrote " + ", ".join(map(str, written)))


def _eval(args: argparse.Namespace) -> None:
    from cdvideo.tasks.evaluate import EvalOptions, evaluate  # lazy: start-up time (the command's modules load torch)

    render = {k: getattr(args, k) for k in ("model", "adapter", "num_inference_steps", "guidance_scale", "height",
                                            "width", "num_frames", "device", "dtype") if getattr(args, k) is not None}
    opts = EvalOptions(output_dir=args.output_dir, weights=args.weights, generated=args.generated,
                       references=args.references, prompts=args.prompts, seeds=args.seeds, video=args.video,
                       metrics=args.metrics.split(","), clip_model=args.clip_model, dino_model=args.dino_model,
                       blip_model=args.blip_model, render=render, judge=args.judge,
                       motion_references=args.motion_references)
    written = evaluate(opts)
    if written:
        print("wrote " + ", ".join(map(str, written)))


def _demo(args: argparse.Namespace) -> None:
    from cdvideo.apps import demo  # lazy: start-up time (the command's modules load torch)

    if args.motion:
        return _motion_demo(args)
    opts = demo.DemoOptions(instance=args.instance, output_dir=args.output_dir, without_spl=args.without_spl)
    if args.prompt:
        opts.prompts = args.prompt
    if args.steps is not None:
        opts.steps = args.steps
    if args.seed:
        opts.seeds = args.seed
    if args.still_seeds is not None:
        opts.still_seeds = args.still_seeds
    report, written = demo.run(opts)
    print("\n" + demo.table(report) + "\n")
    print("wrote:\n" + "\n".join(f"  {p}" for p in written))


def _motion_demo(args: argparse.Namespace) -> None:
    from cdvideo.apps import demo, motion_demo  # lazy: start-up time (the command's modules load torch)
    from cdvideo.toyworld.instances import get  # lazy: start-up time (the command's modules load torch)
    from cdvideo.toyworld.world import NOVEL_MOTIONS  # lazy: start-up time (the command's modules load torch)

    if args.motion not in NOVEL_MOTIONS:
        raise CdvideoError(f"--motion {args.motion}: choose {' or '.join(NOVEL_MOTIONS)}")
    inst = get(args.instance)
    out = demo.new_folder(Path(args.output_dir), f"{inst.name}-{args.motion}")
    rows, written = motion_demo.run(args.motion, inst, out, seed=(args.seed or [0])[0])
    print("\n" + motion_demo.table(args.motion, inst, rows))
    print("\nwrote:\n" + "\n".join(f"  {p}" for p in written))


def _ui(args: argparse.Namespace) -> None:
    from cdvideo.apps.ui.access import (  # lazy: start-up time (the command's modules load torch)
        check_serving,
        credentials,
    )

    creds = credentials(args.auth, args.auth_file)  # checked before gradio loads: a refusal is instant
    warning = check_serving(args.host, args.share, creds, args.no_auth)
    try:
        from cdvideo.apps.ui.app import serve  # lazy: start-up time (the command's modules load torch)
    except ImportError as e:
        raise CdvideoError(f"the web app needs gradio ({e.name} is missing): pip install 'cdvideo[ui]'") from None
    if warning:
        print(warning, file=sys.stderr)
    serve(args.host, args.port, args.share, args.root, args.model, creds, args.allow_dir, args.max_file_size)


def build_parser() -> argparse.ArgumentParser:
    from cdvideo import __version__  # lazy: start-up time (the command's modules load torch)

    parser = Parser(
        prog="cdvideo", description="ClassDiffusion personalization of Stable Diffusion 1.5, rendered as "
        "video through AnimateDiff. Start with: cdvideo demo")
    parser.add_argument("--version", action="version", version=f"cdvideo {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="also show the libraries' notices")
    parser.add_argument("--debug", action="store_true", help="show the traceback and chained cause behind an error "
                        "(or CDVIDEO_DEBUG=1)")
    sub = parser.add_subparsers(dest="command", required=True)
    verbose = argparse.ArgumentParser(add_help=False)
    verbose.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                         help="also show the libraries' notices (transformers, diffusers)")

    def command(name: str, **kw) -> argparse.ArgumentParser:
        return sub.add_parser(name, parents=[verbose], **kw)  # every command takes -v too

    _start_commands(command)
    p = command("train", help="personalize SD1.5 on a few photos (ClassDiffusion)")
    p.add_argument("--config", help="YAML config, e.g. configs/train/dog.yaml")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="override config keys, e.g. max_steps=100")
    p.set_defaults(func=_train)
    p = command("train-motion", help="learn a motion LoRA from 1-5 reference clips (MotionDirector on AnimateDiff)")
    p.add_argument("--config", help="YAML config, e.g. configs/motion/toyworld_circling.yaml")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="override config keys, e.g. max_steps=100")
    p.set_defaults(func=_train_motion)
    p = command("compose", help="merge single-concept weights files into one multi-concept file")
    p.add_argument("files", nargs="+", help="weights files from `cdvideo train`")
    p.add_argument("-o", "--output", required=True, help="the merged weights file")
    p.add_argument("--method", default="constrained", choices=["constrained", "average"],
                   help="constrained: Custom Diffusion's closed form (default); average: mean of the deltas")
    p.add_argument("--rename", action="append", default=[], metavar="FILE:OLD=NEW",
                   help="rename a token of one file, e.g. b:sks=zwx (FILE: file name stem or position)")
    p.add_argument("--model", help="base model (default: the files' base)")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=_compose)
    _interop_commands(command)
    _measure_commands(command)
    p = command("animate", help="render personalized clips with AnimateDiff (MP4 + GIF)")
    render_args(p, video=True)
    p.set_defaults(func=lambda a: render(a, video=True))
    p = command("sample", help="render personalized still images")
    render_args(p, video=False)
    p.set_defaults(func=lambda a: render(a, video=False))
    return parser


def _start_commands(command) -> None:
    """`demo` and `ui`: the ways in."""
    p = command("demo", help="see cdvideo work in under 3 minutes on a CPU, offline, in the miniature world")
    from cdvideo.apps.demo_options import TRAIN, DemoOptions  # light: the parser answers without torch
    from cdvideo.toyworld.instances import (  # lazy: start-up time (the command's modules load torch)
        DEMO_INSTANCE,
        INSTANCES,
    )

    p.add_argument("--instance", default=DEMO_INSTANCE, help=f"personal instance: {', '.join(INSTANCES)}")
    p.add_argument("--prompt", action="append", help="a prompt with 'sks <class>' (repeat for several; default: "
                   "three compositional prompts, on backgrounds that do not hide the subject's outline)")
    p.add_argument("--steps", type=Flag.of(DemoOptions, "steps"), help=f"training steps (default {TRAIN['max_steps']})")
    p.add_argument("--seed", type=Flag.of(DemoOptions, "seeds"), nargs="+", help="render seeds (default 0)")
    opt(p, "still_seeds", type=Flag.of(DemoOptions, "still_seeds"), help="render seeds per still prompt of the "
        f"stills scores: 26 stills each (default {DemoOptions.still_seeds})")
    opt(p, "output_dir", default="demo", help="a new folder inside it each run")
    p.add_argument("--motion", metavar="MOTION", help="instead: learn a motion pretraining never shows (circling "
                   "or zigzag) from 3 clips with train-motion and render the instance doing it (~4 min)")
    opt(p, "without_spl", default="auto", choices=["auto", "always", "never"],
         help="also train without SPL for comparison (auto: when it fits in 3 minutes)")
    p.set_defaults(func=_demo)
    p = command("ui", help="the web app: train, animate, compose, drift in the browser (pip install 'cdvideo[ui]')")
    p.add_argument("--host", default="127.0.0.1", help="interface to serve on (default: this machine only)")
    p.add_argument("--port", type=Flag(int, Range(1, 65535)), default=7860)
    p.add_argument("--share", action="store_true", help="also open a public Gradio share link")
    p.add_argument("--root", default="runs/ui", help="folder for the app's runs, clips and job records")
    p.add_argument("--model", help="default base (toyworld when bundled, else tiny)")
    p.add_argument("--auth", action="append", default=[], metavar="USER:PASSWORD",
                   help="sign-in (repeat for several users); needed beyond 127.0.0.1 and with --share")
    p.add_argument("--auth-file", metavar="FILE", help="sign-in from a file, one user:password a line "
                   "(or the CDVIDEO_UI_AUTH variable: user:password,user2:password2)")
    p.add_argument("--no-auth", action="store_true", help="serve the network without sign-in (a warning says so)")
    p.add_argument("--allow-dir", action="append", default=[], metavar="DIR",
                   help="a folder whose weights files the pickers may read, besides --root (repeatable)")
    p.add_argument("--max-file-size", default="200mb", help="largest upload (default 200mb)")
    p.set_defaults(func=_ui)


def _interop_commands(command) -> None:
    """`import` and `export`: other trainers' and tools' formats."""
    p = command("import", help="convert a Custom Diffusion / ClassDiffusion folder or an embedding file")
    p.add_argument("source", help="folder with pytorch_custom_diffusion_weights.* and <token>.bin, or a textual-"
                   "inversion / A1111 embedding (.pt, .bin, .safetensors)")
    p.add_argument("-o", "--output", required=True, help="the cdvideo weights file to write")
    p.add_argument("--model", required=True, help="the base the weights were trained on (checked against it)")
    opt(p, "model_config", help="how to read a one-file base: sd15 (default), tiny, or a folder")
    opt(p, "class_word", help="the subject's class, e.g. dog (used by drift and hints)")
    p.add_argument("--token", help="token name for an A1111 embedding (default: its file name)")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=_import)
    p = command("export", help="write a weights file for diffusers, ComfyUI/A1111 (LoRA) or as a full model")
    p.add_argument("weights", help="a cdvideo weights file")
    p.add_argument("--format", required=True, choices=["diffusers", "lora", "full"])
    p.add_argument("-o", "--output", required=True, help="folder (diffusers, full) or .safetensors file (lora, "
                   "full --single-file)")
    p.add_argument("--rank", default=32, type=rank_arg, help="LoRA rank, or full for an exact factorisation "
                   "(default 32)")
    opt(p, "single_file", action="store_true", help="full: one original-layout .safetensors checkpoint")
    p.add_argument("--model", help="base model (default: the weights file's base)")
    opt(p, "model_config", help="how to read a one-file base: sd15 (default), tiny, or a folder")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=_export)


def _measure_commands(command) -> None:
    """`drift` and `eval`."""
    p = command("drift", help="plot where the personal token sits among its class (paper's Alg. 1)")
    p.add_argument("--weights", action="append", default=[], help="weights file or training checkpoint folder; "
                   "repeat to compare runs (e.g. with and without SPL) or steps")
    p.add_argument("--phrases", help="text file of adjectives, one per line (default: ~70 bundled; the "
                   "world's colours and sizes for toyworld)")
    p.add_argument("--model", help="base model (default: the first file's base)")
    p.add_argument("-o", "--output", default="drift/drift", help="output path without suffix")
    p.set_defaults(func=_drift)
    p = command("eval", help="score personalization: CLIP-T, CLIP-I, DINO-I, BLIP-T (+ temporal for clips)")
    p.add_argument("--weights", action="append", default=[], help="weights file(s) to generate samples with")
    p.add_argument("--generated", help="score existing images/clips of cdvideo sample/animate (their sidecars)")
    p.add_argument("--references", help="folder of the subject's real photos (default: the training images)")
    p.add_argument("--prompts", default="dreambench", help="dreambench (25 prompts by class) or a text file")
    p.add_argument("--seeds", type=Flag.of(Job, "seed"), nargs="+", default=[0, 1, 2, 3],
                   help="samples per prompt, by seed")
    p.add_argument("--video", action="store_true", help="generate clips with AnimateDiff instead of images")
    p.add_argument("--metrics", default="clip_t,clip_i,dino_i,blip_t", help="comma list (or none); temporal is "
                   "added for clips")
    p.add_argument("--judge", help="toyworld: add identity and composition (asked background, position, motion "
                   "shown) read by the miniature world's judge")
    opt(p, "motion_references", metavar="DIR", help="clips of the wanted motion: add motion fidelity, the cosine "
         "of each clip's optical-flow trajectory to theirs (dynamic degree is added for every clip)")
    opt(p, "clip_model", help="default openai/clip-vit-base-patch32")
    opt(p, "dino_model", help="default facebook/dino-vits16")
    opt(p, "blip_model", help="default Salesforce/blip-itm-large-coco; Salesforce/blip2-itm-vit-g for BLIP-2")
    opt(p, "output_dir", default="eval")
    for name in ("model", "adapter", "device", "dtype"):
        opt(p, name, help=argparse.SUPPRESS)
    for name in ("num_inference_steps", "guidance_scale", "height", "width", "num_frames"):
        opt(p, name, type=Flag.of(Job, name), help=argparse.SUPPRESS)
    p.set_defaults(func=_eval)


def quiet_libraries(verbose: bool) -> None:
    """Keep third-party notices (transformers' torchvision fallback, diffusers' dtype remarks, weight-loading
    bars, deprecation warnings) behind -v; cdvideo's own warnings about the user's input stay visible."""
    import os  # lazy: start-up time (the command's modules load torch)
    import warnings  # lazy: start-up time (the command's modules load torch)

    if verbose:
        logging.getLogger().setLevel(logging.INFO)
        return
    for var in ("TRANSFORMERS_VERBOSITY", "DIFFUSERS_VERBOSITY"):
        os.environ.setdefault(var, "error")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    for module in ("diffusers", "transformers", "accelerate", "huggingface_hub", "peft", "torch", "gradio"):
        warnings.filterwarnings("ignore", module=module)
    from diffusers.utils import logging as diffusers_logging  # lazy: start-up time
    from transformers.utils import logging as transformers_logging  # lazy: start-up time

    for lib in (diffusers_logging, transformers_logging):
        lib.set_verbosity_error()
        lib.disable_progress_bar()


def debug_report(e: BaseException) -> str:
    """The traceback behind a one-line error, then each chained cause (also those `raise ... from None` hides)."""
    parts, seen = [], set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        parts.append("".join(traceback.format_exception(type(e), e, e.__traceback__, chain=False)))
        e = e.__cause__ or e.__context__
    return "\nwhich was raised while handling:\n\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:  # argparse's one-line error, --help or --version: their exit status
        return e.code
    quiet_libraries(getattr(args, "verbose", False))
    debug = getattr(args, "debug", False) or os.environ.get("CDVIDEO_DEBUG", "") not in ("", "0")
    try:
        args.func(args)
    except CdvideoError as e:
        if debug:
            print(debug_report(e), file=sys.stderr)
        print(f"error: {e}" + ("" if debug else " (--debug or CDVIDEO_DEBUG=1 shows the cause)"), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; continue a training run with resume=latest", file=sys.stderr)
        return 130
    except Exception as e:  # a full disk, a read-only one, no permission: one line too (anything else is a bug)
        fault = write_fault(e)
        if fault is None:
            raise
        if debug:
            traceback.print_exc()
        print(f"error: {fault}" + ("" if debug else " (--debug shows the traceback)"), file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
