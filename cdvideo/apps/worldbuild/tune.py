"""How the miniature world's training settings (configs/train/toyworld.yaml, `cdvideo demo`) were chosen: a small
grid of learning rate x steps on the four tuning instances only (the two held-out ones never enter it), each run
scored by the judge as in the SPL ablation (identity and composition).

    python -m cdvideo.apps.worldbuild.tune    # writes docs/toyworld/tuning.md
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from cdvideo.apps.worldbuild.spl_ablation import score
from cdvideo.toyworld import judge as J
from cdvideo.toyworld.instances import INSTANCES

GRID = [(lr, steps) for lr in (3e-4, 1e-3, 3e-3) for steps in (60, 120)]


def run(inst, out: Path, lr: float, steps: int) -> Path:
    from cdvideo.apps.demo import train_config  # lazy: start-up time
    from cdvideo.tasks.train import train  # lazy: start-up time

    if (out / "weights.safetensors").is_file():
        return out / "weights.safetensors"
    return train(train_config(inst, out, steps, 1.0, {"overwrite": True, "optimizer.learning_rate": lr}))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--instances", nargs="+", default=[n for n, i in INSTANCES.items() if not i.held_out])
    p.add_argument("--work", default=".toyworld-build/tuning", help="the runs' weights (default: %(default)s)")
    p.add_argument("--docs", default="docs/toyworld", help="where tuning.md goes (default: %(default)s)")
    args = p.parse_args()
    judge, t0, lines = J.load(), time.time(), []
    for lr, steps in GRID:
        rows = []
        for name in args.instances:
            inst = INSTANCES[name]
            w = run(inst, Path(args.work) / f"{name}-lr{lr:g}-{steps}", lr, steps)
            rows.append(score(w, f"sks {inst.cls}", inst.appearance, judge))
        ident = sum(r["identity"] for r in rows) / len(rows)
        comp = sum(r["composition"] for r in rows) / len(rows)
        lines.append(f"| {lr:g} | {steps} | {ident:.3f} | {comp:.3f} |")
        print(f"[{time.time() - t0:5.0f} s] lr {lr:g}, {steps} steps: identity {ident:.3f}, composition {comp:.3f}",
              flush=True)
    text = ("| learning rate | steps | identity | composition |\n|---|---|---|---|\n" + "\n".join(lines) + "\n\n"
            f"Tuning instances: {', '.join(args.instances)} (SPL 1.0, the demo's other settings).\n")
    Path(args.docs).mkdir(parents=True, exist_ok=True)
    (Path(args.docs) / "tuning.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
