"""What the web app's buttons do, as plain functions over a JobManager and the calling `Client`: each checks every
value that becomes a path before anything touches disk, then builds its inputs with the CLI's own functions (config
loading, prompt jobs, compose, drift), so every check and message is the CLI's."""

from __future__ import annotations

import json
import secrets
import shutil
import time
from pathlib import Path

from cdvideo.apps.ui.access import MAX_VIDEO_SECONDS, MAX_VIDEO_SIDE, Client
from cdvideo.apps.ui.conditions import Conditions, check_clip_upload, kept, resolve
from cdvideo.apps.ui.jobs import Cancelled, Job, JobManager
from cdvideo.data import builtins
from cdvideo.data.config import from_dict, load_train_config
from cdvideo.data.files import check_name, file_stem
from cdvideo.data.photos import transparent
from cdvideo.data.video import check_video, is_video
from cdvideo.errors import CdvideoError
from cdvideo.tasks.compose import compose_files
from cdvideo.tasks.drift import drift
from cdvideo.tasks.render import Job as RenderJob
from cdvideo.tasks.render import Options, animate, check_job
from cdvideo.tasks.train import TrainingStopped, train

PHOTO_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"}
# A miniature base (64 px) trains with the miniature world's recipe (configs/train/toyworld.yaml, `cdvideo demo`; a
# test keeps them the same): SD1.5's defaults (lr 1e-5, scale augmentation) learn next to nothing in 120 steps there.
# Without subject masks it trains at the maskless recipe's rate (`demo.MASKLESS`: at the masked recipe's 5e-4 a run
# without masks loses 0.07 identity); with masks from the photos' transparency, at the masked recipe's (`demo.TRAIN`)
SMALL_TRAIN = {"optimizer.learning_rate": 1e-3, "optimizer.scale_lr": False, "batch_size": 4, "augment": False}
SMALL_MASKED = {"optimizer.learning_rate": 5e-4}
MASKS_BOX = "subject masks from the photos' transparency"  # the Train tab's checkbox, named in its messages
# Background-removed photos have no background to learn: with the box ticked the loss weighs the subject alone. On
# the world's photos cut out on white (docs/toyworld/tuning_cutouts0.md), 0 off the subject reads +0.07 identity on
# stills, +0.23 on clips and +0.07 composition over the recipe's 0.1, which teaches the white
CUTOUT_UNMASKED = 0.0


def native_size(model: str) -> int:
    """A bundled base's image size (64 for toyworld and tiny); SD1.5's 512 for others."""
    return builtins.native_size(model)


def runs(root: Path) -> list[str]:
    """Weights files of finished runs in a client's folder (newest first), for the pickers."""
    files = list((root / "runs").glob("*/weights.safetensors")) + list((root / "runs").glob("*.safetensors"))
    return [str(p) for p in sorted(files, key=lambda p: p.stat().st_mtime, reverse=True)]


def stamp(prefix: str) -> str:
    """`prefix-<date>-<time>-<random>`: two submissions in the same millisecond never share a name."""
    return f"{prefix}-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"


def subject_input(files: list[str], dest: Path, masks: bool = False) -> tuple[str, list[tuple[Path, Path]]]:
    """Check 3-10 photos (or one video: its length and size read before decoding; with `masks`, each photo's
    transparency); the `images:` value for the config and the copies to make into the run's inputs/ (made only once
    the whole config has been checked)."""

    files = [Path(f) for f in files or []]
    videos = [f for f in files if is_video(f)]
    if videos:
        if len(files) != 1:
            raise CdvideoError("drop either one video or 3-10 photos, not both")
        if masks:
            raise CdvideoError(f"a video has no transparency to take masks from: untick '{MASKS_BOX}' or drop photos")
        check_video(videos[0], MAX_VIDEO_SECONDS, MAX_VIDEO_SIDE)
        target = dest / f"{file_stem(videos[0].stem)}{videos[0].suffix.lower()}"
        return str(target), [(videos[0], target)]
    photos = [f for f in files if f.suffix.lower() in PHOTO_SUFFIXES]
    if not 3 <= len(photos) <= 10 or len(photos) != len(files):
        raise CdvideoError(f"drop 3-10 photos (jpg, png, webp, gif) or one video; got {len(files)} file(s)")
    opaque = [f.name for f in photos if masks and not transparent(f)]
    if opaque:
        raise CdvideoError(f"{', '.join(opaque)}: no transparent background to take the subject from; drop "
                           f"background-removed PNGs or untick '{MASKS_BOX}'")
    copies = [(f, dest / f"{k:02d}-{file_stem(f.stem)}{f.suffix.lower()}") for k, f in enumerate(photos)]
    return str(dest), copies


def base_ref(client: Client, model: str, key: str = "base model") -> str:
    """A built-in name or hub id as it is; a local folder or file only inside the client's readable folders."""
    model = (model or "").strip()
    if builtins.get(model):
        return model
    if model and (Path(model).expanduser().exists() or model.startswith((".", "/", "~")) or "\\" in model):
        return client.readable_path(model, key)
    return model


def start_training(mgr: JobManager, client: Client, files: list[str], class_word: str, token: str, steps: int,
                   spl_weight: float, model: str, masks: bool = False) -> Job:
    """A training run on the uploaded photos (with `masks`, weighing the loss on each photo's opaque subject, as
    `masks: alpha`), started once every value is checked."""
    check_name(token or "", "token")
    check_name(class_word or "", "class word", spaces=True)
    model = base_ref(client, model)
    run_dir = client.folder / "runs" / stamp(f"{file_stem(token)}-{file_stem(class_word)}")
    images, copies = subject_input(files, run_dir / "inputs", masks)
    n, size = int(steps), native_size(model)
    every = max(n // 4, 1)
    small = {**SMALL_TRAIN, **(SMALL_MASKED if masks else {})} if size <= 128 else {}
    cfg = load_train_config(None, values={
        **small, "concepts.0.masks": "alpha" if masks else None,
        **({"unmasked_weight": CUTOUT_UNMASKED} if masks else {}), "model": model, "output_dir": str(run_dir),
        "concepts.0.images": images,
        "concepts.0.class_word": class_word, "concepts.0.token": token, "max_steps": n,
        "spl.weight": float(spl_weight), "resolution": size, "validation.every": every,
        "checkpoint_every": every, "validation.prompts": ["a photo of a {token} {class_word}"],
        "report_to": "none"})
    copy_inputs(copies)  # every value is checked: only now does the run's folder appear
    return mgr.submit(client.owner, "train", f"{token} {class_word}, {n} step{'s' * (n != 1)}",
                      lambda j, m: _train(cfg, j, m), {"run": str(run_dir)})


def copy_inputs(copies: list[tuple[Path, Path]]) -> None:
    for src, dst in copies:
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(src, dst)


def resume_training(mgr: JobManager, client: Client) -> Job:
    return resume_last(mgr, client, "train", "training run", load_train_config, _train)


def resume_last(mgr: JobManager, client: Client, kind: str, what: str, load, run) -> Job:
    """Resume the client's last cancelled `kind` job: its run's config.yaml with resume=latest, through `run`."""
    last = next((j for j in mgr.for_owner(client.owner, kind) if j.status == "cancelled"), None)
    if last is None:
        raise CdvideoError(f"no cancelled {what} to resume")
    cfg = load(Path(last.params["run"]) / "config.yaml", values={"resume": "latest"})
    return mgr.submit(client.owner, kind, last.title + " (resumed)", lambda j, m: run(cfg, j, m), last.params)


def _train(cfg, job: Job, mgr: JobManager) -> list[Path]:
    return run_training(lambda on_step, stop: train(cfg, on_step=on_step, should_stop=stop), cfg.max_steps, job, mgr,
                        TrainingStopped, lambda logs: {"spl": logs["loss/spl"]})


def run_training(run, total: int, job: Job, mgr: JobManager, stopped: type[Exception], extra=lambda logs: {}
                 ) -> list[Path]:
    """`run(on_step, should_stop)` (train or train_motion) with live step, loss and ETA in the job, and Cancel:
    a `stopped` exception (the checkpoint saved) marks the job cancelled, for Resume."""
    t0, first = time.time(), None

    def on_step(step: int, logs) -> None:
        nonlocal first
        first = first or step
        per = (time.time() - t0) / max(step - first + 1, 1)
        mgr.update(job, step=step, total=total, loss=logs["loss"], **extra(logs), eta=round(per * (total - step)))

    try:
        return [run(on_step, lambda: mgr.cancelled(job))]
    except stopped as e:
        job.message = f"cancelled at step {e.step}; Resume continues from {e.folder.name}"
        raise Cancelled from None


def start_render(mgr: JobManager, client: Client, weights: str | None, prompts: str, num_frames: int, size: int,
                 steps: int, guidance: float, seeds: str, adapter: str, scale: float, model: str,
                 uploaded: str | None = None, motion_lora: str | None = None, motion_scale: float = 1.0,
                 source: str | None = None, strength: float = 0.8, conditions: Conditions | None = None) -> Job:
    """Clips of `prompts`; `weights` is a picked path (checked), `uploaded` a file Gradio received (used first);
    `motion_lora` a picked motion LoRA (checked) merged at `motion_scale`; `source` a dropped clip to restyle
    (video-to-video) at `strength`; `conditions` a control clip, keyframes or an image prompt with their models."""

    try:
        seed_list = [int(s) for s in seeds.replace(",", " ").split()] or [0]
    except ValueError:
        raise CdvideoError(f"seeds {seeds!r}: whole numbers separated by spaces, e.g. 0 1 2") from None
    lines = [p.strip() for p in (prompts or "").splitlines() if p.strip()]
    if not lines:
        raise CdvideoError("an empty prompt; write what the clip should show (one prompt per line)")
    video = {"video": kept(client, source, check_clip_upload), "strength": float(strength)} if source else {}
    extra, conditioned = resolve(client, conditions or Conditions(), int(num_frames), base_ref)  # checked once
    jobs = [from_dict(RenderJob, {"prompt": p, "seed": seed_list, "num_frames": int(num_frames),
                                  "height": int(size), "width": int(size), "num_inference_steps": int(steps),
                                  "guidance_scale": float(guidance), **video, **extra}) for p in lines]
    weights = uploaded or (client.readable_path(weights, "weights file") if weights else None)
    opts = Options(weights=[weights] if weights else [], model=base_ref(client, model) or None,
                   adapter=base_ref(client, adapter, "adapter") or None, output_dir=str(client.folder / "outputs"),
                   formats=["mp4", "gif"], scale=float(scale), upscale=4 if int(size) <= 128 else 1,
                   motion_loras=[(client.readable_path(motion_lora, "motion LoRA"), float(motion_scale))]
                   if motion_lora else [], **conditioned)
    for j in jobs:
        check_job(j, video=True, formats=tuple(opts.formats))
    title = f"{lines[0][:60]}" + (f" (+{len(lines) - 1})" if len(lines) > 1 else "")
    return mgr.submit(client.owner, "animate", title,
                      lambda job, m: _render(opts, jobs, job, m))


def _render(opts, jobs, job: Job, mgr: JobManager) -> list[Path]:
    def progress(done: int, total: int) -> None:
        mgr.check(job)
        mgr.update(job, step=done, total=total)

    return animate(opts, jobs, progress=progress)


def start_compose(mgr: JobManager, client: Client, files: list[str], method: str, renames: str) -> Job:
    if not files or len(files) < 2:
        raise CdvideoError("choose at least two weights files to compose")
    files = [client.readable_path(f, "weights file") for f in files]
    out = client.folder / "runs" / f"{stamp('composed')}.safetensors"
    rename = [r.strip() for r in (renames or "").split(",") if r.strip()]
    return mgr.submit(client.owner, "compose", f"{method}: {len(files)} files",
                      lambda j, m: [compose_files(list(files), str(out), method, rename, None, False)])


def start_drift(mgr: JobManager, client: Client, files: list[str]) -> Job:
    if not files:
        raise CdvideoError("choose at least one weights file")
    files = [client.readable_path(f, "weights file") for f in files]
    out = client.folder / "drift" / stamp("drift")
    return mgr.submit(client.owner, "drift", f"drift of {len(files)} run(s)", lambda j, m: drift(list(files), str(out)))


def clips(root: Path, limit: int = 24) -> list[tuple[str, dict]]:
    """Earlier clips (GIF) with their sidecar settings, newest first."""
    out = []
    for gif in sorted((root / "outputs").glob("*.gif"), key=lambda p: p.stat().st_mtime, reverse=True)[:limit]:
        side = gif.with_suffix(".json")
        out.append((str(gif), json.loads(side.read_text()) if side.is_file() and side.stat().st_size else {}))
    return out
