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
    print(f"wrote {path}")


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(prog="cdvideo", description=__doc__)
    parser.add_argument("--version", action="version", version=f"cdvideo {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("train", help="personalize SD1.5 on a few photos (ClassDiffusion)")
    p.add_argument("--config", help="YAML config, e.g. configs/train/dog.yaml")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="override config keys, e.g. max_steps=100")
    p.set_defaults(func=_train)
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
