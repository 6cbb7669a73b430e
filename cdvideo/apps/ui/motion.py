"""The web app's Motion tab: drop 1-5 reference clips, train a motion LoRA (`cdvideo train-motion`'s function), live
progress, Cancel and Resume; and the motion LoRAs the Animate tab's picker lists."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import gradio as gr

from cdvideo.apps.ui.access import MAX_VIDEO_SECONDS, MAX_VIDEO_SIDE, Client
from cdvideo.apps.ui.jobs import Cancelled, Job, JobManager
from cdvideo.data.files import file_stem
from cdvideo.data.motion_config import MAX_REFERENCES, load_motion_config
from cdvideo.data.references import CLIP_SUFFIXES
from cdvideo.data.video import VIDEO_SUFFIXES, check_video
from cdvideo.errors import CdvideoError
from cdvideo.tasks.train_motion import MotionTrainingStopped, train_motion


def motion_loras(root: Path) -> list[str]:
    """Motion LoRA files of finished motion runs in a client's folder (newest first), for the Animate picker."""
    files = list((root / "motion").glob("*/motion_lora.safetensors"))
    return [str(p) for p in sorted(files, key=lambda p: p.stat().st_mtime, reverse=True)]


def reference_inputs(files: list[str], dest: Path) -> list[tuple[Path, Path]]:
    """Check 1-5 clips (a video's length and size read before decoding); the copies to make into the run."""
    files = [Path(f) for f in files or []]
    if not 1 <= len(files) <= MAX_REFERENCES:
        raise CdvideoError(f"drop 1-{MAX_REFERENCES} reference clips (mp4, mov, webm, gif); got {len(files)}")
    for f in files:
        if f.suffix.lower() not in CLIP_SUFFIXES:
            raise CdvideoError(f"{f.name}: not a clip; drop mp4, mov, webm, mkv or gif files")
        if f.suffix.lower() in VIDEO_SUFFIXES:
            check_video(f, MAX_VIDEO_SECONDS, MAX_VIDEO_SIDE)
    return [(f, dest / f"{k}-{file_stem(f.stem)}{f.suffix.lower()}") for k, f in enumerate(files)]


def start_motion_training(mgr: JobManager, client: Client, files: list[str], prompt: str, steps: int,
                          model: str, size: int) -> Job:
    from cdvideo.apps.ui.actions import base_ref, stamp  # lazy: start-up time (actions loads the render stack)

    model = base_ref(client, model)
    run_dir = client.folder / "motion" / stamp("motion")
    copies = reference_inputs(files, run_dir / "references")
    n = int(steps)
    cfg = load_motion_config(None, values={
        "model": model, "references": [str(run_dir / "references")], "prompt": prompt or "", "max_steps": n,
        "output_dir": str(run_dir), "resolution": int(size), "checkpoint_every": max(n // 4, 1),
        "rank": 8 if int(size) <= 128 else 32, "learning_rate": 3e-3 if int(size) <= 128 else 5e-4,
        "spatial_learning_rate": 3e-3 if int(size) <= 128 else 5e-4, "report_to": "none"})
    for src, dst in copies:  # every value is checked: only now does the run's folder appear
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(src, dst)
    return mgr.submit(client.owner, "motion", f"motion: {prompt[:40]}, {n} steps",
                      lambda j, m: _train(cfg, j, m), {"run": str(run_dir)})


def resume_motion_training(mgr: JobManager, client: Client) -> Job:
    last = next((j for j in mgr.for_owner(client.owner, "motion") if j.status == "cancelled"), None)
    if last is None:
        raise CdvideoError("no cancelled motion run to resume")
    cfg = load_motion_config(Path(last.params["run"]) / "config.yaml", values={"resume": "latest"})
    return mgr.submit(client.owner, "motion", last.title + " (resumed)", lambda j, m: _train(cfg, j, m),
                      last.params)


def _train(cfg, job: Job, mgr: JobManager) -> list[Path]:
    t0, first = time.time(), None

    def on_step(step: int, logs: dict) -> None:
        nonlocal first
        first = first or step
        per = (time.time() - t0) / max(step - first + 1, 1)
        mgr.update(job, step=step, total=cfg.max_steps, loss=logs["loss"], eta=round(per * (cfg.max_steps - step)))

    try:
        return [train_motion(cfg, on_step=on_step, should_stop=lambda: mgr.cancelled(job))]
    except MotionTrainingStopped as e:
        job.message = f"cancelled at step {e.step}; Resume continues from {e.folder.name}"
        raise Cancelled from None


def motion_tab(mgr: JobManager, access, client, model: str, size: int, on, status_md, latest, cancel) -> tuple:
    """The tab's widgets and events; returns (refresh function, its outputs) for the app's timer."""
    with gr.Row():
        files = gr.File(label="1-5 reference clips of the motion (mp4, mov, webm, gif)", file_count="multiple",
                        elem_id="motion-files")
        with gr.Column():
            prompt = gr.Textbox(label="what the clips show", value="an object on a background"
                                if model == "toyworld" else "", elem_id="motion-prompt")
            steps = gr.Number(label="steps", value=300, precision=0, elem_id="motion-steps")
            base = gr.Dropdown(["toyworld", "tiny", "stable-diffusion-v1-5/stable-diffusion-v1-5"], value=model,
                               label="base model", allow_custom_value=True, elem_id="motion-model")
            side = gr.Number(label="size (px)", value=size, precision=0, elem_id="motion-size")
    with gr.Row():
        start = gr.Button("Train motion", variant="primary", elem_id="motion-start")
        stop = gr.Button("Cancel", elem_id="motion-cancel")
        resume = gr.Button("Resume", elem_id="motion-resume")
    status = gr.Markdown("No job yet.", elem_id="motion-status")
    out = gr.File(label="motion LoRA (AnimateDiff layout)", elem_id="motion-file")

    def go(c, f, p, n, b, s):
        return status_md(start_motion_training(mgr, c, f, p, n, b, s))
    on(start.click, access, go, [client, files, prompt, steps, base, side], status, api_name="train_motion")
    on(stop.click, access, lambda c: cancel(mgr, c, "motion"), [client], status, api_name="cancel_motion")
    on(resume.click, access, lambda c: status_md(resume_motion_training(mgr, c)), [client], status,
       api_name="resume_motion")

    def refresh(c):
        job = latest(mgr, c, "motion")
        return status_md(job), job.files[0] if job and job.status == "done" and job.files else None
    return refresh, [status, out]
