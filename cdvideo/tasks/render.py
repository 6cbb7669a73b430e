"""`cdvideo animate` and `cdvideo sample`: prompts -> clips or images on disk, each with its sidecar JSON."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

import torch
import yaml
from tqdm.auto import tqdm

from cdvideo import __version__
from cdvideo.data.clips import check_formats, write_clip, write_images
from cdvideo.data.config import from_dict
from cdvideo.data.files import slug, text_lines
from cdvideo.data.render_config import Job, Options, check_options
from cdvideo.errors import CdvideoError, first_line
from cdvideo.models.motion_lora import apply_motion_loras
from cdvideo.pipelines import presets
from cdvideo.pipelines.build import image_pipeline, video_pipeline
from cdvideo.pipelines.personalized import load_personalized
from cdvideo.pipelines.presets import PRESETS
from cdvideo.pipelines.registry import default_adapter, load_adapter, make_scheduler, pick_device
from cdvideo.tasks.conditioning import (
    FREE_INIT,
    FREE_NOISE,
    check_controls,
    load_controlnets,
    load_ip,
    preprocessing,
    read_controls,
    read_source,
    vae_factor,
)
from cdvideo.tasks.records import (
    check_unchanged,
    controlnet_record,
    controlnets_from_record,
    ip_adapter_from_record,
    model_record,
    motion_lora_record,
    motion_loras_from_record,
    read_motion_loras,
    source_record,
    sparsectrl_from_record,
    weights_record,
)
from cdvideo.tasks.timing import NO_TIMER

log = logging.getLogger(__name__)
IMAGE_DEFAULTS = {"num_inference_steps": 100, "guidance_scale": 6.0}  # `sample`: the paper's image settings




def load_jobs(prompt: str | None, prompt_file: str | None, defaults: dict) -> list[Job]:
    """Jobs from --prompt, or a YAML list of mappings / a text file with one prompt per line."""
    if (prompt is None) == (prompt_file is None):
        raise CdvideoError("give either --prompt or --prompts FILE")
    if prompt is not None:
        return [from_dict(Job, {**defaults, "prompt": prompt})]
    path = Path(prompt_file)
    if not path.is_file():
        raise CdvideoError(f"prompt file {path} not found")
    if path.suffix.lower() in (".yaml", ".yml"):
        try:
            entries = yaml.safe_load(path.read_text()) or []
        except yaml.YAMLError as e:
            raise CdvideoError(f"{path}: not valid YAML ({first_line(e)})") from None
        if not isinstance(entries, list):
            raise CdvideoError(f"{path}: expected a list of prompt entries")
        entries = [e if isinstance(e, dict) else {"prompt": e} for e in entries]
    else:
        entries = [{"prompt": line} for line in text_lines(path.read_text())]
    try:
        jobs = [from_dict(Job, {**defaults, **_seed_list(e)}, f"entry {i}") for i, e in enumerate(entries)]
    except CdvideoError as e:
        raise CdvideoError(f"{path}: {e}") from None
    if not jobs:
        raise CdvideoError(f"{path}: holds no prompts")
    return jobs


def _seed_list(entry: dict) -> dict:
    seed = entry.get("seed")
    return {**entry, "seed": [seed]} if isinstance(seed, int) else entry


def check_job(job: Job, video: bool, formats: tuple[str, ...] = ()) -> None:
    """Sizes, frame counts and prompt schedules that the pipelines and encoders can take."""
    if job.height is not None and job.width is not None:  # unset: the model's native size (`native_size`)
        if job.height % 8 or job.width % 8 or min(job.height, job.width) < 64:
            raise CdvideoError(f"height/width {job.height}x{job.width}: use multiples of 8, at least 64")
        if "mp4" in formats and (job.height % 16 or job.width % 16):
            raise CdvideoError(f"height/width {job.height}x{job.width}: MP4 (H.264) needs multiples of 16, "
                               f"e.g. {job.height // 16 * 16}x{job.width // 16 * 16}")
    if not job.prompt:
        raise CdvideoError("an empty prompt; write what the clip should show")
    if video:
        if job.video is not None and denoising_steps(job) < 1:
            raise CdvideoError(f"strength {job.strength} of {job.num_inference_steps} steps runs no denoising step; "
                               "raise --strength or --num-inference-steps")
        if isinstance(job.prompt, dict) and any(not 0 <= k < job.num_frames for k in job.prompt):
            raise CdvideoError(f"prompt schedule frames {sorted(job.prompt)} must lie in [0, {job.num_frames})")
    elif isinstance(job.prompt, dict) or job.video is not None or job.ip_adapter_image is not None:
        raise CdvideoError("a per-frame prompt schedule, a source video or an IP-Adapter image is for "
                           "`cdvideo animate` only")


def native_size(jobs: list[Job], m: dict) -> None:
    """Fill unset height/width with the size the model was trained at (UNet sample size x VAE factor)."""
    size = m["unet"].config.sample_size * vae_factor(m)
    for job in jobs:
        job.height, job.width = job.height or size, job.width or size


def token_hint(job: Job, tokens: list[str], class_words: list[str]) -> None:
    """Warn when the prompt does not use the personal token(s) of the weights."""
    texts = job.prompt.values() if isinstance(job.prompt, dict) else [job.prompt]
    if tokens and not any(t in text for text in texts for t in tokens):
        example = f"{tokens[0]} {class_words[0]}" if class_words else tokens[0]
        log.warning("prompt %r does not use the token(s) %s of the weights; write e.g. '%s ...' to show "
                    "the personal subject", next(iter(texts)), ", ".join(tokens), example)


def _base_record(opts: Options, w, model: str, dev: torch.device, dtype: torch.dtype) -> dict:
    return {"cdvideo_version": __version__, "base_model": model, "revision": opts.revision,
            "variant": opts.variant, "weights": weights_record(opts.weights), "scale": opts.scale,
            "tokens": w.tokens if w else [], "scheduler": opts.scheduler, "device": dev.type,
            "dtype": str(dtype).split(".")[-1], "versions": {"torch": torch.__version__, **_lib_versions()}}


def _lib_versions() -> dict:
    import diffusers  # lazy: start-up time
    import transformers  # lazy: start-up time
    return {"diffusers": diffusers.__version__, "transformers": transformers.__version__}


def animate(opts: Options, jobs: list[Job], timer=NO_TIMER, progress=None) -> list[Path]:
    """Render every job's clips through AnimateDiff; returns the files written. One pipeline serves every job
    (rebuilt only when FreeNoise switches on or off). `timer` splits the time, for benchmarks; `progress(done,
    total)` is called after every denoising step (the web app's progress bar)."""
    check_formats(opts.formats)
    check_options(opts)
    for job in jobs:
        check_job(job, video=True, formats=tuple(opts.formats))
        check_controls(job, opts)
    dev, dtype = pick_device(opts.device, opts.dtype)
    with timer("load"):
        m, w, model = load_personalized(opts.model, opts.weights, opts.scale, opts.force, opts.revision,
                                        opts.variant, dtype, opts.model_config)
        native_size(jobs, m)
        adapter_name = opts.adapter or default_adapter(model)
        adapter = load_adapter(adapter_name, dtype)
        controlnets = load_controlnets([ref for ref, _ in opts.controlnets], m, model, dtype)
        sparse = load_controlnets([opts.sparsectrl], m, model, dtype, sparse=True)[0] if opts.sparsectrl else None
        ip = load_ip(opts.ip_adapter, m, model, dtype)
    base = {**_base_record(opts, w, model, dev, dtype), "kind": "video", "adapter": adapter_name,
            "free_init": opts.free_init, "motion_loras": motion_lora_record(opts.motion_loras),
            "decode_chunk_size": opts.decode_chunk_size,
            "upscale": opts.upscale, "preset": active_preset(opts.preset, opts.adapter),
            "model_config": opts.model_config, "controlnets": controlnet_record(opts.controlnets, preprocessing(opts)),
            "sparsectrl": model_record(opts.sparsectrl) if opts.sparsectrl else None,
            "ip_adapter": model_record(str(ip.path)) if ip else None, "ip_adapter_scale": opts.ip_adapter_scale}
    loras = read_motion_loras(opts.motion_loras)  # every file read and checked before rendering starts
    sources = [read_source(job) for job in jobs]  # video-to-video: each source clip, normalised to the job's clip
    controls = [read_controls(job, opts) for job in jobs]  # each ControlNet's condition frames
    written: list[Path] = []
    pipe, pipe_key = None, None
    counter = StepCounter(sum(denoising_steps(j) * len(j.seed) for j in jobs), progress)
    for job, source, control in tqdm(list(zip(jobs, sources, controls)), desc="prompts", disable=len(jobs) < 2):
        if w is not None:
            token_hint(job, w.tokens, w.class_words)
        free_noise = job.num_frames > FREE_NOISE["context_length"] or isinstance(job.prompt, dict)
        if pipe is None or pipe_key != (free_noise, source is not None):  # FreeNoise edits the UNet; a source: v2v
            pipe = None  # release the old pipeline before building the next (peak memory)
            with timer("load"):
                pipe = _video_pipe(m, adapter, opts, dev, free_noise, loras, adapter_name, source is not None,
                                   controlnets, sparse, ip)
            pipe_key = (free_noise, source is not None)
        inputs = {**source_record(job.video), "control_videos": weights_record(job.control_videos),  # hashed once
                  "keyframe_files": weights_record([job.keyframes[k] for k in sorted(job.keyframes)]),
                  "ip_adapter_image_file": weights_record([job.ip_adapter_image] if job.ip_adapter_image else [])}
        for seed in job.seed:
            with timer.pipeline() as callback:
                frames = _render_clip(pipe, job, seed, opts, counter.chain(callback), source, control)
            for k, video in enumerate(frames):
                record = {**base, **_job_record(job), "seed": seed, "video_index": k,
                          "free_noise": FREE_NOISE if free_noise else None, **inputs}
                stem = f"{slug(_first_prompt(job))}_s{seed}" + (f"_v{k}" if len(frames) > 1 else "")
                with timer("export"):
                    written += write_clip(video, Path(opts.output_dir), stem, job.fps, opts.formats, record,
                                          opts.upscale)
    return written


class StepCounter:
    """A pipeline step callback reporting (done, total) denoising steps, chained with another callback."""

    def __init__(self, total: int, report=None):
        self.done, self.total, self.report = 0, total, report

    def chain(self, other=None):
        if self.report is None:
            return other

        def callback(pipe, i, t, kwargs):
            self.done += 1
            self.report(self.done, self.total)
            return other(pipe, i, t, kwargs) if other else kwargs

        return callback


def _place(pipe, opts: Options, dev) -> None:
    """Model CPU offload on GPU when asked; else the whole pipeline on the device."""
    if opts.cpu_offload and dev.type != "cuda":
        log.warning("--cpu-offload works on a CUDA device only; running on %s without it", dev)
    if opts.cpu_offload and dev.type == "cuda":
        pipe.enable_model_cpu_offload(device=dev)
    else:
        pipe.to(dev)  # components were loaded in the right dtype already


def active_preset(preset: str | None, adapter: str | None) -> str | None:
    """The few-step preset in force: --preset, or the one an --adapter registry name implies."""

    return preset or (adapter if adapter in PRESETS else None)


def _video_pipe(m: dict, adapter, opts: Options, dev, free_noise: bool, loras: list = (),
                adapter_name: str = "adapter", video_to_video: bool = False, controlnets: list = (),
                sparsectrl=None, ip_adapter=None):
    name = active_preset(opts.preset, opts.adapter)
    if name:
        p = presets.get(name)
        sched = make_scheduler(p.scheduler, m["scheduler"].config, animatediff=True, **p.scheduler_kwargs)
    else:
        sched = make_scheduler(opts.scheduler, m["scheduler"].config, animatediff=True)
    pipe = video_pipeline(m, adapter, sched, opts.adapter or "adapter", opts.model or "base",
                          video_to_video=video_to_video, controlnets=list(controlnets), sparsectrl=sparsectrl,
                          ip_adapter=ip_adapter, ip_adapter_scale=opts.ip_adapter_scale)
    lora = presets.lora_file(name, opts.lcm_lora) if name else None
    if lora:
        try:
            pipe.load_lora_weights(lora[0], adapter_name="lcm")
            pipe.set_adapters(["lcm"], [lora[1]])
        except (ImportError, ValueError, OSError) as e:
            raise CdvideoError(f"LCM LoRA {lora[0]}: {first_line(e)} "
                               "(needs peft: pip install 'cdvideo[lora]')") from None
    if loras:  # merged into this pipeline's own UNetMotionModel; all checked before any weight changes
        apply_motion_loras(pipe.unet, loras, adapter_name)
    if free_noise:
        pipe.enable_free_noise(**FREE_NOISE)
    if opts.free_init:
        pipe.enable_free_init(**FREE_INIT)
    pipe.vae.enable_slicing()
    _place(pipe, opts, dev)
    return pipe


def denoising_steps(job: Job) -> int:
    """The steps a job runs: video-to-video starts `strength` of the way from the end (diffusers' rule)."""
    return min(int(job.num_inference_steps * job.strength), job.num_inference_steps) if job.video \
        else job.num_inference_steps


def _render_clip(pipe, job: Job, seed: int, opts: Options, callback=None, source=None, control=None) -> list[list]:
    gen = torch.Generator("cpu").manual_seed(seed)  # CPU noise: the same clip on any device
    frames = {"video": source, "strength": job.strength} if source is not None else {"num_frames": job.num_frames}
    if not job.keyframes:  # diffusers' SparseCtrl pipeline decodes every frame at once: it takes no chunk size
        frames["decode_chunk_size"] = opts.decode_chunk_size
    out = pipe(prompt=job.prompt, negative_prompt=job.negative_prompt, **frames, **(control or {}),
               height=job.height, width=job.width, num_inference_steps=job.num_inference_steps,
               guidance_scale=job.guidance_scale, num_videos_per_prompt=job.num_videos_per_prompt,
               generator=gen, output_type="pil", callback_on_step_end=callback)
    return out.frames


def _job_record(job: Job) -> dict:
    d = dataclasses.asdict(job)
    d.pop("seed")
    if isinstance(job.prompt, dict):
        d["prompt"] = {str(k): v for k, v in job.prompt.items()}
    return d


def _first_prompt(job: Job) -> str:
    return job.prompt if isinstance(job.prompt, str) else job.prompt[min(job.prompt)]


def sample(opts: Options, jobs: list[Job]) -> list[Path]:
    """Still images through StableDiffusionPipeline; `num_images_per_prompt` images per seed, in a grid."""
    check_options(opts)
    for job in jobs:
        check_job(job, video=False)
    dev, dtype = pick_device(opts.device, opts.dtype)
    m, w, model = load_personalized(opts.model, opts.weights, opts.scale, opts.force, opts.revision, opts.variant,
                                    dtype, opts.model_config)
    native_size(jobs, m)
    pipe = image_pipeline(m, scheduler=make_scheduler(opts.scheduler, m["scheduler"].config, animatediff=False))
    pipe.set_progress_bar_config(disable=False)
    _place(pipe, opts, dev)
    base = {**_base_record(opts, w, model, dev, dtype), "kind": "image"}
    written: list[Path] = []
    for job in tqdm(jobs, desc="prompts", disable=len(jobs) < 2):
        if w is not None:
            token_hint(job, w.tokens, w.class_words)
        for seed in job.seed:
            gen = torch.Generator("cpu").manual_seed(seed)
            images = pipe(job.prompt, negative_prompt=job.negative_prompt, height=job.height, width=job.width,
                          num_inference_steps=job.num_inference_steps, guidance_scale=job.guidance_scale,
                          num_images_per_prompt=job.num_images_per_prompt, generator=gen).images
            record = {**base, **_job_record(job), "seed": seed}
            written += write_images(images, Path(opts.output_dir), f"{slug(job.prompt)}_s{seed}", record, opts.grid)
    return written


def from_sidecar(record: dict, output_dir: str) -> tuple[Options, list[Job]]:
    """Options and the one job that regenerate a clip or image from its sidecar JSON."""
    for wrec in record.get("weights", []):
        check_unchanged(wrec, "weights file")
    opts = Options(weights=[r["path"] for r in record.get("weights", [])], model=record["base_model"],
                   revision=record.get("revision"), variant=record.get("variant"), adapter=record.get("adapter"),
                   scheduler=record["scheduler"], scale=record["scale"], force=True, output_dir=output_dir,
                   device=record["device"], dtype=record["dtype"], free_init=record.get("free_init", False),
                   motion_loras=motion_loras_from_record(record), decode_chunk_size=record.get("decode_chunk_size", 16),
                   upscale=record.get("upscale", 1), preset=record.get("preset"),
                   model_config=record.get("model_config"))
    opts.controlnets, opts.control_preprocess, control_videos = controlnets_from_record(record)
    keys = {f.name for f in dataclasses.fields(Job)}
    job_data: dict[str, Any] = {k: v for k, v in record.items() if k in keys}
    if isinstance(job_data.get("prompt"), dict):
        job_data["prompt"] = {int(k): v for k, v in job_data["prompt"].items()}
    job_data["seed"], job_data["control_videos"] = [record["seed"]], control_videos
    for r in record.get("keyframe_files") or []:
        check_unchanged(r, "keyframe")
    files = [r["path"] for r in record.get("keyframe_files") or []]  # resolved, in index order
    job_data["keyframes"] = dict(zip(sorted(int(k) for k in record.get("keyframes") or {}), files))
    opts.sparsectrl = sparsectrl_from_record(record)
    opts.ip_adapter, opts.ip_adapter_scale = ip_adapter_from_record(record)
    for r in record.get("ip_adapter_image_file") or []:
        check_unchanged(r, "IP-Adapter image")
        job_data["ip_adapter_image"] = r["path"]
    if record.get("video"):
        check_unchanged({"path": record["video"], "sha256": record["video_sha256"]}, "source video")
    return opts, [from_dict(Job, job_data)]
