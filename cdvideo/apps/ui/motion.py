"""The web app's Motion tab: drop 1-5 reference clips, train a motion LoRA (`cdvideo train-motion`'s function), live
progress, Cancel and Resume; and the motion LoRAs the Animate tab's picker lists."""

from __future__ import annotations

from pathlib import Path

import gradio as gr

from cdvideo.apps.ui.access import Client
from cdvideo.apps.ui.actions import base_ref, copy_inputs, resume_last, run_training, stamp
from cdvideo.apps.ui.conditions import check_clip_upload
from cdvideo.apps.ui.jobs import Job, JobManager
from cdvideo.data.files import file_stem
from cdvideo.data.motion_config import MAX_REFERENCES, load_motion_config
from cdvideo.errors import CdvideoError
from cdvideo.tasks.train_motion import MotionTrainingStopped, train_motion


# configs/motion/toyworld_circling.yaml's settings for 64 px bases; SD1.5 keeps the schema's (MotionDirector's)
SMALL = {"rank": 16, "learning_rate": 3e-3, "spatial_learning_rate": 3e-4, "loss_weighting": "high-noise"}


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
        check_clip_upload(f)
    return [(f, dest / f"{k}-{file_stem(f.stem)}{f.suffix.lower()}") for k, f in enumerate(files)]


def start_motion_training(mgr: JobManager, client: Client, files: list[str], prompt: str, steps: int,
                          model: str, size: int) -> Job:
    model = base_ref(client, model)
    run_dir = client.folder / "motion" / stamp("motion")
    copies = reference_inputs(files, run_dir / "references")
    n, small = int(steps), int(size) <= 128  # a miniature base takes the miniature world's settings
    cfg = load_motion_config(None, values={
        "model": model, "references": [str(run_dir / "references")], "prompt": prompt or "", "max_steps": n,
        "output_dir": str(run_dir), "resolution": int(size), "checkpoint_every": max(n // 4, 1),
        **(SMALL if small else {}), "report_to": "none"})
    copy_inputs(copies)  # every value is checked: only now does the run's folder appear
    return mgr.submit(client.owner, "motion", f"motion: {prompt[:40]}, {n} steps",
                      lambda j, m: _train(cfg, j, m), {"run": str(run_dir)})


def resume_motion_training(mgr: JobManager, client: Client) -> Job:
    return resume_last(mgr, client, "motion", "motion run", load_motion_config, _train)


def _train(cfg, job: Job, mgr: JobManager) -> list[Path]:
    return run_training(lambda on_step, stop: train_motion(cfg, on_step=on_step, should_stop=stop), cfg.max_steps,
                        job, mgr, MotionTrainingStopped)


def motion_tab(mgr: JobManager, access, client, model: str, size: int, on, status_md, latest, cancel) -> tuple:
    """The tab's widgets and events; returns (refresh function, its outputs) for the app's timer."""
    with gr.Row():
        files = gr.File(label="1-5 reference clips of the motion (mp4, mov, webm, gif)", file_count="multiple",
                        elem_id="motion-files")
        with gr.Column():
            prompt = gr.Textbox(label="what the clips show", value="an object on a background"
                                if model == "toyworld" else "", elem_id="motion-prompt")
            steps = gr.Number(label="steps", value=600 if model == "toyworld" else 300, precision=0,
                              elem_id="motion-steps")
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
