"""Build the test fixtures that would cost the suite minutes, once, to commit (small, seeded).

    python scripts/make_fixtures.py            # about 3 minutes on 2 CPU cores

- `tests/fixtures/motion/circling_temporal_600.safetensors` (530 KB): the temporal motion LoRA that 600 steps of
  `cdvideo train-motion` learn from the 3 circling reference clips of the miniature world (seed 0, "temporal only",
  the demo's other settings). `..._600.json` beside it holds the first 10 steps' losses of that run, so that a test
  can check in 10 steps that today's code still trains what made the fixture (tests/test_motion_train.py).

Run it again whenever a change to train-motion, the miniature world or its motion adapter changes those losses (the
test says so when they differ).
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures" / "motion"
MOTION_STEPS, PINNED_STEPS = 600, 10  # the second edition's adapter needs 600 (200 moved fidelity by -0.03)
MOTION_RUN = {"variant": "temporal only", "extra": {"checkpoint_every": 0, "seed": 0}}  # the test reads it back


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


def main() -> None:
    argparse.ArgumentParser(description=__doc__.split("\n")[0]).parse_args()
    build_motion_lora(FIXTURES)  # atomic_path makes the folder


if __name__ == "__main__":
    main()
