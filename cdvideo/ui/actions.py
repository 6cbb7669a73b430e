"""What the web app's buttons do, as plain functions over a JobManager: each builds its inputs with the CLI's own
functions (config loading, prompt jobs, compose, drift), so every check and message is the CLI's."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from ..errors import CdvideoError
from .jobs import Cancelled, Job, JobManager

NATIVE = {"toyworld": 64, "tiny": 64}  # built-in bases' image size; others are SD1.5-sized (512)
PHOTO_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"}


def native_size(model: str) -> int:
    return NATIVE.get(model, 512)


def runs(root: Path) -> list[str]:
    """Weights files of finished runs (newest first), for the pickers."""
    files = list((root / "runs").glob("*/weights.safetensors")) + list((root / "runs").glob("*.safetensors"))
    return [str(p) for p in sorted(files, key=lambda p: p.stat().st_mtime, reverse=True)]


def stamp(prefix: str) -> str:
    return f"{prefix}-{time.strftime('%Y%m%d-%H%M%S')}-{int(time.time() * 1000) % 1000:03d}"


def subject_input(files: list[str], dest: Path) -> str:
    """Copy 3-10 photos (or one video) into the run's inputs/; the `images:` value for the config."""
    from ..video_subject import is_video

    files = [Path(f) for f in files or []]
    videos = [f for f in files if is_video(f)]
    if videos:
        if len(files) != 1:
            raise CdvideoError("drop either one video or 3-10 photos, not both")
        dest.mkdir(parents=True, exist_ok=True)
        return str(shutil.copy(videos[0], dest / videos[0].name))
    photos = [f for f in files if f.suffix.lower() in PHOTO_SUFFIXES]
    if not 3 <= len(photos) <= 10 or len(photos) != len(files):
        raise CdvideoError(f"drop 3-10 photos (jpg, png, webp, gif) or one video; got {len(files)} file(s)")
    dest.mkdir(parents=True, exist_ok=True)
    for f in photos:
        shutil.copy(f, dest / f.name)
    return str(dest)


def start_training(mgr: JobManager, owner: str, files: list[str], class_word: str, token: str, steps: int,
                   spl_weight: float, model: str) -> Job:
    from ..config import load_train_config

    run_dir = mgr.root / "runs" / stamp(f"{token or 'sks'}-{class_word or 'subject'}")
    images = subject_input(files, run_dir / "inputs")
    every = max(int(steps) // 4, 1)
    cfg = load_train_config(None, [
        f"model={model}", f"output_dir={run_dir}", f"concepts.0.images={images}", f"concepts.0.class_word={class_word}",
        f"concepts.0.token={token}", f"max_steps={int(steps)}", f"spl.weight={spl_weight}",
        f"resolution={native_size(model)}", f"validation.every={every}", f"checkpoint_every={every}",
        "validation.prompts=['a photo of a {token} {class_word}']", "report_to=none"])
    n = int(steps)
    return mgr.submit(owner, "train", f"{token} {class_word}, {n} step{'s' * (n != 1)}",
                      lambda j, m: _train(cfg, j, m), {"run": str(run_dir)})


def resume_training(mgr: JobManager, owner: str) -> Job:
    from ..config import load_train_config

    last = next((j for j in mgr.for_owner(owner, "train") if j.status == "cancelled"), None)
    if last is None:
        raise CdvideoError("no cancelled training run to resume")
    cfg = load_train_config(Path(last.params["run"]) / "config.yaml", ["resume=latest"])
    return mgr.submit(owner, "train", last.title + " (resumed)", lambda j, m: _train(cfg, j, m), last.params)


def _train(cfg, job: Job, mgr: JobManager) -> list[Path]:
    from ..train import TrainingStopped, train

    t0, first = time.time(), None

    def on_step(step: int, logs) -> None:
        nonlocal first
        first = first or step
        per = (time.time() - t0) / max(step - first + 1, 1)
        mgr.update(job, step=step, total=cfg.max_steps, loss=logs["loss"], spl=logs["loss/spl"],
                   eta=round(per * (cfg.max_steps - step)))

    try:
        return [train(cfg, on_step=on_step, should_stop=lambda: mgr.cancelled(job))]
    except TrainingStopped as e:
        job.message = f"cancelled at step {e.step}; Resume continues from {e.folder.name}"
        raise Cancelled from None


def start_render(mgr: JobManager, owner: str, weights: str | None, prompts: str, num_frames: int, size: int,
                 steps: int, guidance: float, seeds: str, adapter: str, scale: float, model: str) -> Job:
    from ..config import from_dict
    from ..render import Job as RenderJob
    from ..render import Options, check_job

    try:
        seed_list = [int(s) for s in seeds.replace(",", " ").split()] or [0]
    except ValueError:
        raise CdvideoError(f"seeds {seeds!r}: whole numbers separated by spaces, e.g. 0 1 2") from None
    lines = [p.strip() for p in (prompts or "").splitlines() if p.strip()]
    if not lines:
        raise CdvideoError("an empty prompt; write what the clip should show (one prompt per line)")
    jobs = [from_dict(RenderJob, {"prompt": p, "seed": seed_list, "num_frames": int(num_frames),
                                  "height": int(size), "width": int(size), "num_inference_steps": int(steps),
                                  "guidance_scale": float(guidance)}) for p in lines]
    opts = Options(weights=[weights] if weights else [], model=model or None, adapter=adapter or None,
                   output_dir=str(mgr.root / "outputs"), formats=["mp4", "gif"], scale=float(scale),
                   upscale=4 if int(size) <= 128 else 1)
    for j in jobs:
        check_job(j, video=True, formats=tuple(opts.formats))
    return mgr.submit(owner, "animate", f"{lines[0][:60]}" + (f" (+{len(lines) - 1})" if len(lines) > 1 else ""),
                      lambda job, m: _render(opts, jobs, job, m))


def _render(opts, jobs, job: Job, mgr: JobManager) -> list[Path]:
    from ..render import animate

    def progress(done: int, total: int) -> None:
        mgr.check(job)
        mgr.update(job, step=done, total=total)

    return animate(opts, jobs, progress=progress)


def start_compose(mgr: JobManager, owner: str, files: list[str], method: str, renames: str) -> Job:
    from ..compose import compose_files

    if not files or len(files) < 2:
        raise CdvideoError("choose at least two weights files to compose")
    out = mgr.root / "runs" / f"{stamp('composed')}.safetensors"
    rename = [r.strip() for r in (renames or "").split(",") if r.strip()]
    return mgr.submit(owner, "compose", f"{method}: {len(files)} files",
                      lambda j, m: [compose_files(list(files), str(out), method, rename, None, False)])


def start_drift(mgr: JobManager, owner: str, files: list[str]) -> Job:
    from ..drift_report import drift

    if not files:
        raise CdvideoError("choose at least one weights file")
    out = mgr.root / "drift" / stamp("drift")
    return mgr.submit(owner, "drift", f"drift of {len(files)} run(s)", lambda j, m: drift(list(files), str(out)))


def clips(root: Path, limit: int = 24) -> list[tuple[str, dict]]:
    """Earlier clips (GIF) with their sidecar settings, newest first."""
    out = []
    for gif in sorted((root / "outputs").glob("*.gif"), key=lambda p: p.stat().st_mtime, reverse=True)[:limit]:
        side = gif.with_suffix(".json")
        out.append((str(gif), json.loads(side.read_text()) if side.is_file() and side.stat().st_size else {}))
    return out
