"""Build the test fixtures that would cost the suite minutes, once, to commit (small, seeded).

    python scripts/make_fixtures.py            # about 4 minutes on 2 CPU cores
    python scripts/make_fixtures.py --only personal

- `tests/fixtures/motion/circling_temporal_600.safetensors` (530 KB): the temporal motion LoRA that 600 steps of
  `cdvideo train-motion` learn from the 3 circling reference clips of the miniature world (seed 0, "temporal only",
  the demo's other settings). `..._600.json` beside it holds the first 10 steps' losses of that run, so that a test
  can check in 10 steps that today's code still trains what made the fixture (tests/test_motion_train.py).

- `tests/fixtures/personal/*.safetensors` (300 KB each): four `cdvideo train` runs of striped_ball on the miniature
  world that tests/test_toyworld_demo.py compares with the demo's own run: the demo's recipe without SPL and with
  SPL 1, and the strong maskless pair (6e-3, SPL 0 and 1) whose token drift SPL holds. Each `.json` holds the run's
  settings and its first 5 steps' losses, checked in 5 steps by the same test file.

Run it again whenever a change to train-motion, `cdvideo train`, the miniature world or its motion adapter changes
those losses (the tests say so when they differ).
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures"
MOTION_STEPS, PINNED_STEPS = 600, 10  # the second edition's adapter needs 600 (200 moved fidelity by -0.03)
MOTION_RUN = {"variant": "temporal only", "extra": {"checkpoint_every": 0, "seed": 0}}  # the test reads it back
PERSONAL_PINNED = 5
# name: (SPL weight, settings over the demo's recipe); the tests read them back from each run's record
DRIFT_RUN = {"optimizer.learning_rate": 6e-3, "concepts.0.masks": None, "seed": 0}  # strong, maskless: it drifts
PERSONAL_RUNS = {
    "recipe_spl0": (0.0, {}),  # the demo's recipe without SPL (Custom Diffusion)
    "recipe_spl1": (1.0, {}),  # the demo's recipe at the schema's SPL weight
    "drift_spl0": (0.0, DRIFT_RUN), "drift_spl1": (1.0, DRIFT_RUN),
}


def build_motion_lora(out: Path) -> None:
    import torch  # lazy: start-up time

    from cdvideo.apps import motion_demo as M  # lazy: start-up time
    from cdvideo.data.files import atomic_path, write_text_atomic  # lazy: start-up time
    from cdvideo.tasks.train_motion import train_motion  # lazy: start-up time
    from cdvideo.toyworld.motions import write_reference_clips  # lazy: start-up time

    losses: list[float] = []
    t0 = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        refs = write_reference_clips("circling", Path(tmp) / "refs")
        cfg = M.motion_config(refs[0].parent, Path(tmp) / "run", MOTION_RUN["variant"],
                              {**MOTION_RUN["extra"], "max_steps": MOTION_STEPS})
        lora = train_motion(cfg, on_step=lambda step, logs: losses.append(logs["loss"]))
        name = out / f"circling_temporal_{MOTION_STEPS}.safetensors"
        with atomic_path(name) as tmp_file:
            tmp_file.write_bytes(lora.read_bytes())
    record = {"command": "python scripts/make_fixtures.py", "steps": MOTION_STEPS, **MOTION_RUN,
              "first_losses": losses[:PINNED_STEPS], "torch": torch.__version__,
              "threads": torch.get_num_threads(), "machine": platform.machine(), "seconds": round(time.time() - t0)}
    write_text_atomic(name.with_suffix(".json"), json.dumps(record, indent=1) + "\n")
    print(f"{name} ({name.stat().st_size / 1e3:.0f} kB, {record['seconds']} s)")


def build_personal_runs(out: Path) -> None:
    for name, (spl, extra) in PERSONAL_RUNS.items():
        build_personal_run(out / f"{name}.safetensors", spl, extra)


def build_personal_run(path: Path, spl: float, extra: dict) -> None:
    import torch  # lazy: start-up time

    from cdvideo.apps.demo import TRAIN, train_config  # lazy: start-up time
    from cdvideo.data.files import atomic_path, write_text_atomic  # lazy: start-up time
    from cdvideo.tasks.train import train  # lazy: start-up time
    from cdvideo.toyworld import instances  # lazy: start-up time

    inst, losses = instances.get("striped_ball"), []
    t0 = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        weights = train(train_config(inst, Path(tmp) / "run", TRAIN["max_steps"], spl, extra),
                        on_step=lambda step, logs: losses.append(logs["loss"]))
        with atomic_path(path) as tmp_file:
            tmp_file.write_bytes(weights.read_bytes())
    record = {"command": "python scripts/make_fixtures.py --only personal", "instance": inst.name,
              "steps": TRAIN["max_steps"], "spl": spl, "extra": extra, "first_losses": losses[:PERSONAL_PINNED],
              "torch": torch.__version__, "threads": torch.get_num_threads(), "machine": platform.machine(),
              "seconds": round(time.time() - t0)}
    write_text_atomic(path.with_suffix(".json"), json.dumps(record, indent=1) + "\n")
    print(f"{path} ({path.stat().st_size / 1e3:.0f} kB, {record['seconds']} s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", choices=("motion", "personal"), help="build one kind of fixture (default: both)")
    only = parser.parse_args().only
    if only in (None, "motion"):
        build_motion_lora(FIXTURES / "motion")  # atomic_path makes the folder
    if only in (None, "personal"):
        build_personal_runs(FIXTURES / "personal")


if __name__ == "__main__":
    main()
