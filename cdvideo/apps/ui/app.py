"""`cdvideo ui`: the web app (Gradio Blocks). Train, Motion, Animate, Compose and Drift tabs over the same functions
as the CLI (`actions`, `motion`), jobs one at a time in a worker (`jobs`). Signed in (`--auth`), a user owns its jobs
and folder, read from the server's session, never from the page; without sign-in (loopback only) each browser tab
gets an id kept in its sessionStorage, so a reload finds its jobs again and two tabs see their own."""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import gradio as gr

from cdvideo.apps.ui import actions
from cdvideo.apps.ui.access import MAX_FILE_SIZE, Access, Client
from cdvideo.apps.ui.conditions import IMAGE_SUFFIXES, Conditions
from cdvideo.apps.ui.jobs import Job, JobManager
from cdvideo.apps.ui.motion import motion_loras, motion_tab
from cdvideo.data import builtins
from cdvideo.data.control import PREPROCESS
from cdvideo.data.references import CLIP_SUFFIXES
from cdvideo.errors import CdvideoError

CLIENT_JS = """() => { let id = sessionStorage.getItem('cdvideo-client');
  if (!id) { id = Math.random().toString(36).slice(2) + Date.now().toString(36);
             sessionStorage.setItem('cdvideo-client', id); }
  return id; }"""
ADAPTERS = ["", "toyworld", "tiny", "v1-5-2", "v1-5-3", "animatelcm", "lightning-4"]


def handler(access: Access, fn):
    """A Gradio handler `(tab id, *inputs, request)` that calls `fn(client, *inputs)`: the client is the signed-in
    user from the server's session (else the tab); a user mistake becomes the CLI's one-line message in the page."""
    def wrapper(tab: str, *args):
        *inputs, request = args
        client = access.client(tab, getattr(request, "username", None))
        try:
            return fn(client, *inputs)
        except CdvideoError as e:
            raise gr.Error(str(e), print_exception=False) from None
    return wrapper


def with_request(n_inputs: int, fn):
    """`fn` with a signature of `n_inputs` plain inputs and a trailing `gr.Request`, as Gradio reads it."""

    params = [inspect.Parameter(f"x{i}", inspect.Parameter.POSITIONAL_OR_KEYWORD) for i in range(n_inputs)]
    params.append(inspect.Parameter("request", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=gr.Request))
    fn.__signature__ = inspect.Signature(params)
    fn.__annotations__ = {"request": gr.Request}
    return fn


def on(event, access: Access, fn, inputs: list, outputs, **kw):
    """`event(...)` wired to `handler(access, fn)`: inputs start with the tab id."""
    return event(with_request(len(inputs), handler(access, fn)), inputs, outputs, **kw)


def status_md(job: Job | None) -> str:
    if job is None:
        return "No job yet."
    p = job.progress
    line = f"**{job.title}**: {job.status}"
    if "step" in p:
        line += f", step {p['step']}/{p.get('total', '?')}"
    if "loss" in p:
        line += f", loss {p['loss']:.4f}" + (f", SPL {p['spl']:.4f}" if "spl" in p else "")
    if job.status == "running" and p.get("eta") is not None:
        line += f", about {p['eta']} s left"
    if job.message:
        line += f"\n\n{'error: ' if job.status == 'error' else ''}{job.message}"
    return line


def latest(mgr: JobManager, client: Client, kind: str) -> Job | None:
    jobs = mgr.for_owner(client.owner, kind) if client.owner else []
    return jobs[0] if jobs else None


def train_tab(mgr: JobManager, access: Access, client, model: str) -> tuple:
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
            masks = gr.Checkbox(label=actions.MASKS_BOX, value=False, elem_id="train-masks",
                                info="background-removed PNGs: the loss weighs the subject alone")
    with gr.Row():
        start = gr.Button("Start", variant="primary", elem_id="train-start")
        cancel = gr.Button("Cancel", elem_id="train-cancel")
        resume = gr.Button("Resume", elem_id="train-resume")
    status = gr.Markdown("No job yet.", elem_id="train-status")
    gallery = gr.Gallery(label="validation images", columns=6, height=220, elem_id="train-gallery")
    weights = gr.File(label="weights file", elem_id="train-weights")
    def go(c, f, w, t, n, spl_weight, b, m):
        return status_md(actions.start_training(mgr, c, f, w, t, n, spl_weight, b, m))
    on(start.click, access, go, [client, files, class_word, token, steps, spl, base, masks], status, api_name="train")
    on(cancel.click, access, lambda c: _cancel(mgr, c, "train"), [client], status, api_name="cancel_train")
    on(resume.click, access, lambda c: status_md(actions.resume_training(mgr, c)), [client], status,
       api_name="resume_train")

    def refresh(c):
        job = latest(mgr, c, "train")
        run = Path(job.params["run"]) if job else None
        images = sorted(str(p) for p in run.glob("validation/*/*.png")) if run else []
        done = job.files[0] if job and job.status == "done" and job.files else None
        return status_md(job), images, done
    return refresh, [status, gallery, weights]


def conditioning_inputs() -> list:
    """The Animate tab's control clip + ControlNet, keyframes + SparseCtrl, image prompt + IP-Adapter, in the order
    of `Conditions`' fields."""
    with gr.Accordion("Conditioning: ControlNet, SparseCtrl keyframes, image prompt (IP-Adapter)", open=False):
        with gr.Row():
            control = gr.File(label="control clip (its frames or edges condition every frame)",
                              file_types=list(CLIP_SUFFIXES), elem_id="anim-control")
            controlnet = gr.Textbox(label="ControlNet (folder, .safetensors or hub id)", elem_id="anim-controlnet")
            preprocess = gr.Radio(list(PREPROCESS), value="none", label="control clip preprocessing",
                                  elem_id="anim-preprocess")
            control_scale = gr.Slider(0, 2, value=1.0, step=0.05, label="control scale", elem_id="anim-control-scale")
        with gr.Row():
            keyframes = gr.File(label="keyframes (first on frame 0, last on the last frame, others between)",
                                file_count="multiple", file_types=list(IMAGE_SUFFIXES), elem_id="anim-keyframes")
            sparsectrl = gr.Textbox(label="SparseCtrl model (RGB or scribble)", elem_id="anim-sparsectrl")
        with gr.Row():
            ip_image = gr.File(label="image prompt", file_types=list(IMAGE_SUFFIXES), elem_id="anim-ip-image")
            ip_adapter = gr.Textbox(label="IP-Adapter (file with image_encoder/ beside it, sd15, plus-sd15)",
                                    elem_id="anim-ip-adapter")
            ip_scale = gr.Slider(0, 1.5, value=1.0, step=0.05, label="image prompt scale", elem_id="anim-ip-scale")
    return [control, controlnet, preprocess, control_scale, keyframes, sparsectrl, ip_image, ip_adapter, ip_scale]


# The Animate tab's inputs in the order its Render handler (`go` in `animate_tab`) takes them after the client
RENDER_INPUTS = ("weights", "upload", "prompts", "frames", "side", "steps", "guidance", "seeds", "adapter", "scale",
                 "base", "motion_file", "motion_scale", "source", "strength")


def animate_inputs(model: str) -> dict:
    """The Animate tab's two columns of settings, by name (`RENDER_INPUTS`, and the runs list's refresh button)."""
    i: dict = {}
    with gr.Row():
        with gr.Column():
            i["weights"] = gr.Dropdown([], label="weights file (runs folder)", allow_custom_value=True,
                                       elem_id="anim-weights")
            i["upload"] = gr.File(label="or upload a weights file", file_types=[".safetensors"], elem_id="anim-upload")
            i["refresh_runs"] = gr.Button("Refresh list", size="sm", elem_id="anim-refresh")
            i["base"] = gr.Dropdown(["toyworld", "tiny", ""], value=model, label="base (empty: the weights file's)",
                                    allow_custom_value=True, elem_id="anim-model")
            i["prompts"] = gr.Textbox(label="prompts, one per line", lines=3, elem_id="anim-prompts",
                                      value="a sks ball moving right on a blue background" if model == "toyworld"
                                      else "")
        with gr.Column():
            i["frames"] = gr.Slider(8, 32, value=16, step=8, label="frames", elem_id="anim-frames")
            i["side"] = gr.Number(label="size (px)", value=actions.native_size(model), precision=0,
                                  elem_id="anim-size")
            i["steps"] = gr.Number(label="steps", value=20, precision=0, elem_id="anim-steps")
            i["guidance"] = gr.Number(label="guidance", value=5.0, elem_id="anim-guidance")
            i["seeds"] = gr.Textbox(label="seeds", value="0", elem_id="anim-seeds")
            i["adapter"] = gr.Dropdown(ADAPTERS, value="", label="adapter (empty: the base's default)",
                                       allow_custom_value=True, elem_id="anim-adapter")
            i["scale"] = gr.Slider(0, 1, value=1.0, step=0.05, label="scale", elem_id="anim-scale")
            i["motion_file"] = gr.Dropdown([], label="motion LoRA (Motion tab's runs; empty: none)",
                                           allow_custom_value=True, elem_id="anim-motion")
            i["motion_scale"] = gr.Slider(0, 1.5, value=1.0, step=0.05, label="motion LoRA scale",
                                          elem_id="anim-motion-scale")
            i["source"] = gr.File(label="source clip to restyle (video-to-video; empty: from text)",
                                  file_types=list(CLIP_SUFFIXES), elem_id="anim-source")
            i["strength"] = gr.Slider(0.05, 1, value=0.8, step=0.05, label="strength (video-to-video: lower keeps "
                                      "more of the source)", elem_id="anim-strength")
    return i


def animate_tab(mgr: JobManager, access: Access, client, model: str) -> tuple:
    i = animate_inputs(model)
    conditions = conditioning_inputs()
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

    def go(c, w, u, p, fr, sz, st, g, sd, ad, sc, b, ml, ms, src, k, *cond):
        return status_md(actions.start_render(mgr, c, w or None, p, fr, sz, st, g, sd, ad, sc, b, uploaded=u,
                                              motion_lora=ml or None, motion_scale=ms, source=src, strength=k,
                                              conditions=Conditions(*cond)))
    on(render.click, access, go, [client, *(i[k] for k in RENDER_INPUTS), *conditions], status, api_name="render")
    on(i["motion_file"].focus, access, lambda c: gr.update(choices=motion_loras(c.folder)), [client],
       i["motion_file"])
    on(cancel.click, access, lambda c: _cancel(mgr, c, "animate"), [client], status, api_name="cancel_render")
    for event in (i["refresh_runs"].click, i["weights"].focus):
        on(event, access, lambda c: gr.update(choices=actions.runs(c.folder)), [client], i["weights"])

    def show(c: Client, evt: gr.SelectData):
        found = actions.clips(c.folder)
        return found[evt.index][1] if evt.index is not None and evt.index < len(found) else {}

    def select(tab: str, evt: gr.SelectData, request: gr.Request):
        return show(access.client(tab, getattr(request, "username", None)), evt)
    earlier.select(select, [client], settings)

    def refresh(c):
        job = latest(mgr, c, "animate")
        out = [f for f in (job.files if job and job.status == "done" else [])]
        mp4 = next((f for f in out if f.endswith(".mp4")), None)
        gif_f = next((f for f in out if f.endswith(".gif")), None)
        side_f = next((f for f in out if f.endswith(".json")), None)
        meta = json.loads(Path(side_f).read_text()) if side_f else None
        return status_md(job), mp4, gif_f, out or None, meta, [g for g, _ in actions.clips(c.folder)]
    return refresh, [status, video, gif, files, settings, earlier]


def compose_drift_tabs(mgr: JobManager, access: Access, client) -> tuple:
    with gr.Tab("Compose"):
        c_files = gr.Dropdown([], multiselect=True, allow_custom_value=True, label="weights files",
                              elem_id="comp-files")
        method = gr.Radio(["constrained", "average"], value="constrained", label="method", elem_id="comp-method")
        renames = gr.Textbox(label="renames, e.g. b:sks=zwx (comma separated)", elem_id="comp-renames")
        c_go = gr.Button("Compose", variant="primary", elem_id="comp-go")
        c_status = gr.Markdown("No job yet.", elem_id="comp-status")
        c_out = gr.File(label="composed weights", elem_id="comp-out")
    with gr.Tab("Drift"):
        d_files = gr.Dropdown([], multiselect=True, allow_custom_value=True, label="weights files",
                              elem_id="drift-files")
        d_go = gr.Button("Plot drift", variant="primary", elem_id="drift-go")
        d_status = gr.Markdown("No job yet.", elem_id="drift-status")
        d_plot = gr.Image(label="drift", elem_id="drift-plot")
    for dd in (c_files, d_files):
        on(dd.focus, access, lambda c: gr.update(choices=actions.runs(c.folder)), [client], dd)
    on(c_go.click, access, lambda c, f, m, r: status_md(actions.start_compose(mgr, c, f, m, r)),
       [client, c_files, method, renames], c_status, api_name="compose")
    on(d_go.click, access, lambda c, f: status_md(actions.start_drift(mgr, c, f)), [client, d_files], d_status,
       api_name="drift")

    def refresh(c):
        cj, dj = latest(mgr, c, "compose"), latest(mgr, c, "drift")
        c_file = cj.files[0] if cj and cj.status == "done" else None
        d_png = next((f for f in dj.files if f.endswith(".png")), None) if dj and dj.status == "done" else None
        return status_md(cj), c_file, status_md(dj), d_png
    return refresh, [c_status, c_out, d_status, d_plot]


def _cancel(mgr: JobManager, client: Client, kind: str) -> str:
    job = latest(mgr, client, kind)
    if job is None or not job.active:
        return status_md(job)
    mgr.cancel(job.id, client.owner)
    return status_md(job) + "\n\ncancelling..."


def jobs_json(mgr: JobManager, client: Client) -> list[dict]:
    """The caller's own jobs, newest first (the `/jobs` API: what a script polls)."""
    return [{"id": j.id, "kind": j.kind, "title": j.title, "status": j.status, "progress": j.progress,
             "message": j.message, "created": j.created} for j in mgr.for_owner(client.owner)]


def build(root: str | Path = "runs/ui", model: str = "toyworld", allow_dirs: list[str] = ()):
    """The Gradio Blocks app over a JobManager rooted at `root`; pickers may also read the `allow_dirs`."""
    mgr, access = JobManager(Path(root)), Access(Path(root), allow_dirs)
    with gr.Blocks(title="cdvideo") as demo:
        gr.Markdown("# cdvideo\nClassDiffusion personalization, rendered as video with AnimateDiff.")
        client = gr.Textbox(visible=False, elem_id="client-id")
        with gr.Tab("Train"):
            train_refresh, train_out = train_tab(mgr, access, client, model)
        with gr.Tab("Motion"):
            motion_refresh, motion_out = motion_tab(mgr, access, client, model, actions.native_size(model), on,
                                                    status_md, latest, _cancel)
        with gr.Tab("Animate"):
            anim_refresh, anim_out = animate_tab(mgr, access, client, model)
        other_refresh, other_out = compose_drift_tabs(mgr, access, client)
        sent: dict[tuple, list] = {}
        outputs = [*train_out, *motion_out, *anim_out, *other_out]

        def tick(c: Client):  # send only what changed since this tab's last tick (no flicker, selections kept)
            new = [*train_refresh(c), *motion_refresh(c), *anim_refresh(c), *other_refresh(c)]
            old = sent.get((c.owner, c.tab), [object()] * len(new))
            sent[(c.owner, c.tab)] = new
            return tuple(v if v != o else gr.skip() for v, o in zip(new, old))

        def reload(c: Client):  # a (re)loaded page shows everything afresh
            sent.pop((c.owner, c.tab), None)
            return tick(c)
        loaded = demo.load(None, None, client, js=CLIENT_JS)
        on(loaded.then, access, reload, [client], outputs)
        on(gr.Timer(1.0).tick, access, tick, [client], outputs, show_progress="hidden")
        status = gr.JSON(visible=False)
        on(demo.load, access, lambda c: jobs_json(mgr, c), [client], status, api_name="jobs")
    demo.mgr = mgr
    return demo


def serve(host: str = "127.0.0.1", port: int = 7860, share: bool = False, root: str = "runs/ui",
          model: str | None = None, auth: list[tuple[str, str]] | None = None, allow_dirs: list[str] = (),
          max_file_size: str = MAX_FILE_SIZE) -> None:
    """`cdvideo ui`: serve until interrupted (sign-in when `auth` holds credentials; checked by the caller)."""
    world = builtins.get("toyworld")
    default = model or ("toyworld" if world and (world.model_dir() / "model_index.json").is_file() else "tiny")
    demo = build(root, default, allow_dirs)
    who = f"sign-in for {len(auth)} user(s)" if auth else "no sign-in"
    print(f"cdvideo ui on http://{host}:{port} ({who}; jobs and outputs in {root}); Ctrl+C stops it")
    served, blocked = served_paths(Path(root), allow_dirs, signed_in=bool(auth))
    demo.queue(default_concurrency_limit=4).launch(
        server_name=host, server_port=port, share=share, auth=list(auth) if auth else None, allowed_paths=served,
        blocked_paths=blocked, max_file_size=max_file_size, quiet=True)


def served_paths(root: Path, allow_dirs: list[str], signed_in: bool) -> tuple[list[str], list[str]]:
    """What Gradio may serve for download: signed in, only the users' folders (each with a secret part in its
    name) and the --allow-dir ones, never the job records or the secret; else the whole root."""
    root = root.resolve()
    served = [root / "users" if signed_in else root, *(Path(d).expanduser().resolve() for d in allow_dirs)]
    return [str(p) for p in served], [str(root / "jobs"), str(root / ".secret")]
