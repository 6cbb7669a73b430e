"""The personal subject under the world's mask ControlNet, on clips: striped_ball trained at the demo's recipe, the
masks of a ball circling (a path no pretraining clip shows; big and small, two scene seeds) as `cdvideo animate
--controlnet toyworld:mask --control-video`, against the same clip without the ControlNet and the base model under
the same control. The judge reads the path error (px from the circle, on average over the frames) and identity.

    python -m cdvideo.apps.worldbuild.control_clips    # about 2 minutes on 2 cores; docs/toyworld/control_clips.md
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from PIL import Image

from cdvideo.data.files import write_text_atomic
from cdvideo.data.ranges import INFERENCE_STEPS, Flag, Parser
from cdvideo.errors import CdvideoError
from cdvideo.toyworld import judge as J
from cdvideo.toyworld.instances import get
from cdvideo.toyworld.motions import circling_masks, path_error

MASKS = (("big", 3), ("big", 4), ("small", 3), ("small", 4))  # (size of the circling ball, scene seed)
ARMS = ("subject + ControlNet", "subject without", "base + ControlNet")


def clip(args: list[str], out: Path, steps: int) -> list[Image.Image]:
    """One clip through `cdvideo animate` (seed 0) with `args` added; its raw frames."""
    from cdvideo.apps.cli import main  # lazy: start-up time

    if main(["animate", "--model", "toyworld", *args, "--num-inference-steps", str(steps), "--seed", "0",
             "--format", "png", "--output-dir", str(out)]) != 0:
        raise CdvideoError(f"{out}: the clip was not rendered (the message above says why)")
    return [Image.open(f).convert("RGB") for f in sorted(next(out.glob("*_frames")).glob("*.png"))]


def run(work: Path, steps: int) -> list[dict]:
    """One row per mask set: each arm's path error and identity."""
    from cdvideo.apps.demo import MASKLESS, train_config  # lazy: start-up time
    from cdvideo.tasks.train import train  # lazy: start-up time

    inst, judge = get("striped_ball"), J.load()
    weights = ["--weights", str(train(train_config(inst, work / "subject", 120, 1.0, {"overwrite": True,
                                                                                     **MASKLESS})))]
    rows = []
    for size, seed in MASKS:
        gif, truth = circling_masks(work / "masks", size, seed)
        control = ["--controlnet", "toyworld:mask", "--control-video", str(gif)]
        row = {"masks": f"{size} ball, scene seed {seed}"}
        for arm, args in zip(ARMS, ([*weights, *control, "--prompt", "a sks ball on a gray background"],
                                    [*weights, "--prompt", "a sks ball on a gray background"],
                                    [*control, "--prompt", "a ball on a gray background"])):
            reading = J.read(judge, clip(args, work / f"{size}-{seed}" / arm.replace(" ", "_"), steps))
            row[arm] = {"path error": path_error(reading, truth), "identity": J.identity(reading, inst.appearance)}
        rows.append(row)
    return rows


def table(rows: list[dict], steps: int, minutes: float) -> str:
    lines = ["| masks | path error, subject + ControlNet | without the ControlNet | identity, subject + ControlNet | "
             "base \"a ball\" + ControlNet | subject without |", "|---|---|---|---|---|---|"]
    for r in rows:
        s, w, b = (r[a] for a in ARMS)
        lines.append(f"| {r['masks']} | {s['path error']:.1f} px | {w['path error']:.1f} px | {s['identity']:.2f} | "
                     f"{b['identity']:.2f} | {w['identity']:.2f} |")
    return ("\n".join(lines) + f"\n\n{steps} steps, seed 0, \"a sks ball on a gray background\" (striped_ball at the "
            f"demo's recipe); `python -m cdvideo.apps.worldbuild.control_clips`, {minutes:.0f} min.\n")


def main() -> None:
    p = Parser(prog="python -m cdvideo.apps.worldbuild.control_clips", description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=Flag(int, INFERENCE_STEPS), default=20, help="sampling steps per clip")
    p.add_argument("--work", default=".toyworld-build/control_clips", help="clips and weights (default: %(default)s)")
    p.add_argument("--docs", default="docs/toyworld", help="where control_clips.md/.json go (default: %(default)s)")
    args = p.parse_args()
    t0 = time.time()
    rows = run(Path(args.work), args.steps)
    text = table(rows, args.steps, (time.time() - t0) / 60)
    write_text_atomic(Path(args.docs) / "control_clips.json", json.dumps(rows, indent=1) + "\n")
    write_text_atomic(Path(args.docs) / "control_clips.md", text)
    print(text)


if __name__ == "__main__":
    main()
