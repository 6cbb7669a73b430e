"""`cdvideo ui`: the web app (Gradio Blocks). Train, Animate, Compose and Drift tabs over the same functions as the
CLI (`actions`), jobs one at a time in a worker (`jobs`). Each browser tab gets an id kept in its sessionStorage, so a
reload finds its jobs again and two tabs see their own."""

from __future__ import annotations

import json
from pathlib import Path

import gradio as gr

from ..errors import CdvideoError
from . import actions
from .jobs import Job, JobManager

CLIENT_JS = """() => { let id = sessionStorage.getItem('cdvideo-client');
  if (!id) { id = Math.random().toString(36).slice(2) + Date.now().toString(36);
             sessionStorage.setItem('cdvideo-client', id); }
  return id; }"""
ADAPTERS = ["", "toyworld", "tiny", "v1-5-2", "v1-5-3", "animatelcm", "lightning-4"]


def guarded(fn):
    """Run a button's action; a user mistake becomes the CLI's one-line message in the page, never a trace."""
    def wrapper(*args):
        try:
            return fn(*args)
        except CdvideoError as e:
            raise gr.Error(str(e), print_exception=False) from None
    return wrapper


def status_md(job: Job | None) -> str:
    if job is None:
        return "No job yet."
    p = job.progress
    line = f"**{job.title}**: {job.status}"
    if "step" in p:
        line += f", step {p['step']}/{p.get('total', '?')}"
    if "loss" in p:
        line += f", loss {p['loss']:.4f}, SPL {p['spl']:.4f}"
    if job.status == "running" and p.get("eta") is not None:
        line += f", about {p['eta']} s left"
    if job.message:
        line += f"\n\n{'error: ' if job.status == 'error' else ''}{job.message}"
    return line


def latest(mgr: JobManager, owner: str, kind: str) -> Job | None:
    jobs = mgr.for_owner(owner, kind) if owner else []
    return jobs[0] if jobs else None


def train_tab(mgr: JobManager, client, model: str) -> tuple:
    with gr.Row():
        files = gr.File(label="3-10 photos or one short video of the subject", file_count="multiple",
                        elem_id="train-files")
        with gr.Column():
            class_word = gr.Textbox(label="class word", value="ball" if model == "toyworld" else "dog",
                                    elem_id="train-class")
            token = gr.Textbox(label="token", value="sks", elem_id="train-token")
            steps = gr.Number(label="steps", value=120 if model == "toyworld" else 500, precision=0,
                              elem_id="train-steps")
            spl = gr.Number(label="SPL weight", value=1.0, elem_id="train-spl")
            base = gr.Dropdown(["toyworld", "tiny", "stable-diffusion-v1-5/stable-diffusion-v1-5"], value=model,
                               label="base model", allow_custom_value=True, elem_id="train-model")
    with gr.Row():
        start = gr.Button("Start", variant="primary", elem_id="train-start")
        cancel = gr.Button("Cancel", elem_id="train-cancel")
        resume = gr.Button("Resume", elem_id="train-resume")
    status = gr.Markdown("No job yet.", elem_id="train-status")
    gallery = gr.Gallery(label="validation images", columns=6, height=220, elem_id="train-gallery")
    weights = gr.File(label="weights file", elem_id="train-weights")
    def go(c, f, w, t, n, spl_weight, b):
        return status_md(actions.start_training(mgr, c, f, w, t, n, spl_weight, b))
    start.click(guarded(go), [client, files, class_word, token, steps, spl, base], status)
    cancel.click(lambda c: _cancel(mgr, c, "train"), client, status)
    resume.click(guarded(lambda c: status_md(actions.resume_training(mgr, c))), client, status)

    def refresh(c):
        job = latest(mgr, c, "train")
        run = Path(job.params["run"]) if job else None
        images = sorted(str(p) for p in run.glob("validation/*/*.png")) if run else []
        done = job.files[0] if job and job.status == "done" and job.files else None
        return status_md(job), images, done
    return refresh, [status, gallery, weights]


def animate_tab(mgr: JobManager, client, model: str) -> tuple:
    size = actions.native_size(model)
    with gr.Row():
        with gr.Column():
            weights = gr.Dropdown(actions.runs(mgr.root), label="weights file (runs folder)", allow_custom_value=True,
                                  elem_id="anim-weights")
            upload = gr.File(label="or upload a weights file", file_types=[".safetensors"], elem_id="anim-upload")
            refresh_runs = gr.Button("Refresh list", size="sm", elem_id="anim-refresh")
            base = gr.Dropdown(["toyworld", "tiny", ""], value=model, label="base (empty: the weights file's)",
                               allow_custom_value=True, elem_id="anim-model")
            prompts = gr.Textbox(label="prompts, one per line", lines=3, elem_id="anim-prompts",
                                 value="a sks ball moving right on a blue background" if model == "toyworld" else "")
        with gr.Column():
            frames = gr.Slider(8, 32, value=16, step=8, label="frames", elem_id="anim-frames")
            side = gr.Number(label="size (px)", value=size, precision=0, elem_id="anim-size")
            steps = gr.Number(label="steps", value=20, precision=0, elem_id="anim-steps")
            guidance = gr.Number(label="guidance", value=5.0, elem_id="anim-guidance")
            seeds = gr.Textbox(label="seeds", value="0", elem_id="anim-seeds")
            adapter = gr.Dropdown(ADAPTERS, value="", label="adapter (empty: the base's default)",
                                  allow_custom_value=True, elem_id="anim-adapter")
            scale = gr.Slider(0, 1, value=1.0, step=0.05, label="scale", elem_id="anim-scale")
    with gr.Row():
        render = gr.Button("Render", variant="primary", elem_id="anim-render")
        cancel = gr.Button("Cancel", elem_id="anim-cancel")
    status = gr.Markdown("No job yet.", elem_id="anim-status")
    with gr.Row():
        video = gr.Video(label="clip (MP4)", elem_id="anim-video", autoplay=True)
        gif = gr.Image(label="clip (GIF)", elem_id="anim-gif")
        files = gr.File(label="downloads", file_count="multiple", elem_id="anim-downloads")
    settings = gr.JSON(label="settings", elem_id="anim-settings")
    earlier = gr.Gallery(label="earlier clips (select one for its settings)", columns=6, height=200,
                         elem_id="anim-gallery")

    def go(c, w, u, p, fr, sz, st, g, sd, ad, sc, b):
        return status_md(actions.start_render(mgr, c, u or w or None, p, fr, sz, st, g, sd, ad, sc, b))
    render.click(guarded(go), [client, weights, upload, prompts, frames, side, steps, guidance, seeds, adapter, scale,
                               base], status)
    cancel.click(lambda c: _cancel(mgr, c, "animate"), client, status)
    refresh_runs.click(lambda: gr.update(choices=actions.runs(mgr.root)), None, weights)
    def show(evt: gr.SelectData):
        found = actions.clips(mgr.root)
        return found[evt.index][1] if evt.index is not None and evt.index < len(found) else {}
    earlier.select(show, None, settings)

    def refresh(c):
        job = latest(mgr, c, "animate")
        out = [f for f in (job.files if job and job.status == "done" else [])]
        mp4 = next((f for f in out if f.endswith(".mp4")), None)
        gif_f = next((f for f in out if f.endswith(".gif")), None)
        side_f = next((f for f in out if f.endswith(".json")), None)
        meta = json.loads(Path(side_f).read_text()) if side_f else None
        return status_md(job), mp4, gif_f, out or None, meta, [g for g, _ in actions.clips(mgr.root)]
    return refresh, [status, video, gif, files, settings, earlier]


def compose_drift_tabs(mgr: JobManager, client) -> tuple:
    with gr.Tab("Compose"):
        c_files = gr.Dropdown(actions.runs(mgr.root), multiselect=True, label="weights files", elem_id="comp-files")
        method = gr.Radio(["constrained", "average"], value="constrained", label="method", elem_id="comp-method")
        renames = gr.Textbox(label="renames, e.g. b:sks=zwx (comma separated)", elem_id="comp-renames")
        c_go = gr.Button("Compose", variant="primary", elem_id="comp-go")
        c_status = gr.Markdown("No job yet.", elem_id="comp-status")
        c_out = gr.File(label="composed weights", elem_id="comp-out")
    with gr.Tab("Drift"):
        d_files = gr.Dropdown(actions.runs(mgr.root), multiselect=True, label="weights files", elem_id="drift-files")
        d_go = gr.Button("Plot drift", variant="primary", elem_id="drift-go")
        d_status = gr.Markdown("No job yet.", elem_id="drift-status")
        d_plot = gr.Image(label="drift", elem_id="drift-plot")
    for dd in (c_files, d_files):
        dd.focus(lambda: gr.update(choices=actions.runs(mgr.root)), None, dd)
    c_go.click(guarded(lambda c, f, m, r: status_md(actions.start_compose(mgr, c, f, m, r))),
               [client, c_files, method, renames], c_status)
    d_go.click(guarded(lambda c, f: status_md(actions.start_drift(mgr, c, f))), [client, d_files], d_status)

    def refresh(c):
        cj, dj = latest(mgr, c, "compose"), latest(mgr, c, "drift")
        c_file = cj.files[0] if cj and cj.status == "done" else None
        d_png = next((f for f in dj.files if f.endswith(".png")), None) if dj and dj.status == "done" else None
        return status_md(cj), c_file, status_md(dj), d_png
    return refresh, [c_status, c_out, d_status, d_plot]


def _cancel(mgr: JobManager, owner: str, kind: str) -> str:
    job = latest(mgr, owner, kind)
    if job is None or not job.active:
        return status_md(job)
    mgr.cancel(job.id, owner)
    return status_md(job) + "\n\ncancelling..."


def build(root: str | Path = "runs/ui", model: str = "toyworld"):
    """The Gradio Blocks app over a JobManager rooted at `root`."""
    mgr = JobManager(Path(root))
    with gr.Blocks(title="cdvideo") as demo:
        gr.Markdown("# cdvideo\nClassDiffusion personalization, rendered as video with AnimateDiff.")
        client = gr.Textbox(visible=False, elem_id="client-id")
        with gr.Tab("Train"):
            train_refresh, train_out = train_tab(mgr, client, model)
        with gr.Tab("Animate"):
            anim_refresh, anim_out = animate_tab(mgr, client, model)
        other_refresh, other_out = compose_drift_tabs(mgr, client)
        sent: dict[str, list] = {}
        outputs = [*train_out, *anim_out, *other_out]

        def tick(c):  # send only what changed since this tab's last tick (no flicker, selections kept)
            new = [*train_refresh(c), *anim_refresh(c), *other_refresh(c)]
            old = sent.get(c, [object()] * len(new))
            sent[c] = new
            return tuple(v if v != o else gr.skip() for v, o in zip(new, old))

        def reload(c):  # a (re)loaded page shows everything afresh
            sent.pop(c, None)
            return tick(c)
        demo.load(None, None, client, js=CLIENT_JS).then(reload, client, outputs)
        gr.Timer(1.0).tick(tick, client, outputs, show_progress="hidden")
    demo.mgr = mgr
    return demo


def serve(host: str = "127.0.0.1", port: int = 7860, share: bool = False, root: str = "runs/ui",
          model: str | None = None) -> None:
    """`cdvideo ui`: serve until interrupted."""
    from .. import toyworld

    default = model or ("toyworld" if (toyworld.model_dir() / "model_index.json").is_file() else "tiny")
    demo = build(root, default)
    print(f"cdvideo ui on http://{host}:{port} (jobs and outputs in {root}); Ctrl+C stops it")
    demo.queue(default_concurrency_limit=4).launch(server_name=host, server_port=port, share=share,
                                                    allowed_paths=[str(Path(root).resolve())], quiet=True)
