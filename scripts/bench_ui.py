"""A Train job in the web app against `cdvideo train` with the same config: steps per second, side by side, in one run.

    python scripts/bench_ui.py [--steps 120] [--rounds 2]

Each arm runs in a fresh process, in turn, `--rounds` times; the fastest round of each counts (a shared machine
drifts). Both train the miniature world's striped ball:
- `web app`: the app `cdvideo ui` serves (built and launched on a free local port), its Train button's function
  (`actions.start_training`) queues the job; steps per second from the job's live progress, read every 5 ms;
- `cli`: what `cdvideo train --config <that job's config.yaml>` runs (the config loaded, `train()` in the main thread);
- `web app, torch in the main thread first`: as `web app`, but the process's main thread trains a few steps before
  the job (as a test process does). Two OpenMP teams then share the cores (docs/benchmarks.md, "The web app's jobs").
Rates are over the steps after the fifth (model loading and the first steps' warm-up excluded); the validation
images and checkpoints the Train tab asks for (every quarter of the run) are inside both.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ARMS = ("web app", "cli", "web app, torch in the main thread first")


def web_app(root: Path, steps: int, warm_main: bool) -> dict:
    from cdvideo.apps.ui import actions
    from cdvideo.apps.ui.access import Access
    from cdvideo.apps.ui.app import build
    from cdvideo.toyworld import instances

    if warm_main:
        cli(root / "warm", None, 10)
    demo = build(root, "toyworld")
    demo.queue().launch(server_name="127.0.0.1", server_port=None, prevent_thread_lock=True, quiet=True)
    client = Access(root).client("bench", None)
    photos = sorted(str(p) for p in instances.photos_dir("striped_ball").glob("*.png"))
    job = actions.start_training(demo.mgr, client, photos, "ball", "sks", steps, 1.0, "toyworld")
    seen: list[tuple[int, float]] = []
    while job.active:
        step = job.progress.get("step", 0)
        if step > 5 and (not seen or seen[-1][0] != step):
            seen.append((step, time.perf_counter()))
        time.sleep(0.005)
    assert job.status == "done", job.message
    demo.close()
    (s0, t0), (s1, t1) = seen[0], seen[-1]
    return {"steps_per_s": (s1 - s0) / (t1 - t0), "config": job.params["run"] + "/config.yaml"}


def cli(root: Path, config: str | None, steps: int) -> dict:
    from cdvideo.data.config import load_train_config
    from cdvideo.tasks.train import train

    values = {"output_dir": str(root / "cli"), "max_steps": steps}
    if config is None:  # a short plain run (the main thread's warm-up)
        values.update({"model": "toyworld", "concepts.0.images": "toyworld:striped_ball",
                       "concepts.0.class_word": "ball", "checkpoint_every": 0, "report_to": "none"})
    times: list[float] = []
    train(load_train_config(config, values=values), on_step=lambda step, logs: times.append(time.perf_counter()))
    return {"steps_per_s": (len(times) - 6) / (times[-1] - times[5])}


def child(arm: str, steps: int, work: Path, config: str | None) -> dict:
    """One arm in a fresh process, in its own folder under `work`; its JSON result."""
    folder = Path(tempfile.mkdtemp(dir=work))
    cmd = [sys.executable, __file__, "--child", arm, "--steps", str(steps), "--work", str(folder)]
    out = subprocess.run(cmd + (["--config", config] if config else []), capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"{arm} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=120)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--child", choices=ARMS, help=argparse.SUPPRESS)
    ap.add_argument("--work", help=argparse.SUPPRESS)
    ap.add_argument("--config", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        root = Path(a.work)
        result = cli(root, a.config, a.steps) if a.child == "cli" else web_app(root, a.steps, a.child != "web app")
        print(json.dumps(result))
        return
    best: dict[str, float] = {}
    config = None
    work = tempfile.TemporaryDirectory()
    for r in range(a.rounds):
        for arm in ARMS:
            result = child(arm, a.steps, Path(work.name), config)
            config = result.get("config", config)
            best[arm] = max(best.get(arm, 0.0), result["steps_per_s"])
            print(f"round {r + 1}  {arm:42s} {result['steps_per_s']:6.2f} steps/s", flush=True)
    cli_rate = best["cli"]
    print(f"\nfastest of {a.rounds} rounds, {a.steps} steps of the Train tab's run (toyworld, striped ball):")
    print(f"{'arm':42s} {'steps/s':>8s} {'vs cli':>7s}")
    for arm in ARMS:
        print(f"{arm:42s} {best[arm]:8.2f} {best[arm] / cli_rate:6.2f}x")


if __name__ == "__main__":
    main()
