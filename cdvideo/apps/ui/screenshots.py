"""The docs' screenshots of the web app's five tabs on the miniature world, clicked through in a headless Chromium
as the browser test does (Debian's chromium + chromium-driver, selenium from the test extra):

    python -m cdvideo.apps.ui.screenshots --output-dir docs     # ui-train.png ... ui-drift.png, ~4 min on 2 cores

Train: spotted_star's 5 photos as "zwx star", striped_ball's as "sks ball" without SPL, then with it (the tab's
defaults: 120 steps, the world's recipe without masks, as the bundled photos are opaque). Motion: 3 reference clips
of a circling ball. Animate: the ball wearing a red hat. Compose: the ball and the star. Drift: the ball's token
with and without SPL, against its class.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from cdvideo.apps.ui.drive import chromium, choose, click, fill, served, tab, text_of, upload, wait_for, wait_text
from cdvideo.data.files import atomic_path
from cdvideo.errors import CdvideoError
from cdvideo.toyworld import motions
from cdvideo.toyworld.instances import photos_dir

TABS = ("train", "motion", "animate", "compose", "drift")
MOTION_STEPS = 200  # enough to show a finished motion run; the Motion tab's default (600) takes ~3 min more


def photos(name: str) -> list[Path]:
    return sorted(p for p in photos_dir(name).iterdir() if p.suffix == ".png")


def train_run(d, root: Path, name: str, class_word: str, token: str, spl: str = "1") -> Path:
    """A Train job on an instance's photos at the tab's default steps, from a fresh page; its weights file."""
    before = set(root.rglob("weights.safetensors"))
    d.refresh()  # a fresh page (empty file box) that still shows this tab's jobs
    wait_for(d, "#train-files input[type=file]")
    upload(d, "train-files", photos(name))
    fill(d, "train-class", class_word, "textarea")
    fill(d, "train-token", token, "textarea")
    fill(d, "train-spl", spl)
    click(d, "train-start")
    deadline = time.time() + 600  # the status may still show the last run of the same title: wait for the file
    while not (new := set(root.rglob("weights.safetensors")) - before):
        if time.time() > deadline or "error" in text_of(d, "train-status"):
            raise CdvideoError(f"the Train tab's job did not finish: {text_of(d, 'train-status')}")
        time.sleep(1)
    wait_text(d, "train-status", f"{token} {class_word}, 120 steps: done")
    wait_for(d, "#train-gallery img")
    return new.pop()


def click_through(d, url: str, root: Path, work: Path, shots: Path) -> None:
    """Every tab, each job to its end, a screenshot of each tab into `shots`."""
    d.get(url)
    star = train_run(d, root, "spotted_star", "star", "zwx")
    plain = train_run(d, root, "striped_ball", "ball", "sks", spl="0")
    ball = train_run(d, root, "striped_ball", "ball", "sks")
    d.save_screenshot(str(shots / "ui-train.png"))

    tab(d, "Motion")
    upload(d, "motion-files", motions.write_reference_clips("circling", work / "clips"))
    fill(d, "motion-steps", str(MOTION_STEPS))
    click(d, "motion-start")
    wait_text(d, "motion-status", f"{MOTION_STEPS} steps: done", timeout=900)
    d.save_screenshot(str(shots / "ui-motion.png"))

    tab(d, "Animate")
    upload(d, "anim-upload", [ball])
    fill(d, "anim-prompts", "a sks ball wearing a red hat on a grassy background", "textarea")
    click(d, "anim-render")
    wait_text(d, "anim-status", "done", timeout=600)
    wait_for(d, "#anim-video video[src]")
    d.set_window_size(1400, 2250)  # the tab is long: the clip sits below the settings
    d.save_screenshot(str(shots / "ui-animate.png"))
    d.set_window_size(1400, 1500)

    tab(d, "Compose")
    for w in (ball, star):
        choose(d, "comp-files", str(w))
    click(d, "comp-go")
    wait_text(d, "comp-status", "done", timeout=600)
    d.save_screenshot(str(shots / "ui-compose.png"))

    tab(d, "Drift")
    for w in (ball, plain):
        choose(d, "drift-files", str(w))
    click(d, "drift-go")
    wait_text(d, "drift-status", "done", timeout=600)
    wait_for(d, "#drift-plot img")
    d.save_screenshot(str(shots / "ui-drift.png"))


def take(output_dir: Path, work: Path) -> list[Path]:
    """Serve the app on the miniature world, click through it; the five screenshots, moved into `output_dir`."""
    root, shots = work / "ui", work / "shots"
    shots.mkdir(parents=True)
    with served(root, "toyworld") as url, chromium(work / "chrome", size=(1400, 1500)) as d:
        click_through(d, url, root, work, shots)
    written = []
    for name in TABS:  # all five taken: only now do they replace the docs' ones
        with atomic_path(output_dir / f"ui-{name}.png") as tmp:
            shutil.copy(shots / f"ui-{name}.png", tmp)
        written.append(output_dir / f"ui-{name}.png")
    return written


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m cdvideo.apps.ui.screenshots", description=__doc__.splitlines()[0])
    p.add_argument("--output-dir", default="docs", help="where ui-<tab>.png go (default: %(default)s)")
    args = p.parse_args()
    out = Path(args.output_dir)
    if not out.is_dir():
        raise SystemExit(f"error: --output-dir {out}: no such folder")
    try:
        with tempfile.TemporaryDirectory(prefix="cdvideo-shots-") as work:
            written = take(out, Path(work))
    except CdvideoError as e:
        raise SystemExit(f"error: {e}") from None
    print("wrote " + ", ".join(map(str, written)))


if __name__ == "__main__":
    main()
