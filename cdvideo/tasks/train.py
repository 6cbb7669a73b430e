"""ClassDiffusion fine-tuning: cross-attention K/V + new token rows, noise MSE + lambda * SPL.

One loop, sections in order: output folder, data, models, trainable parameters, optimizer, SPL targets,
latents, resume, steps, weights file. All randomness of a step derives from (seed, process, step), so a resumed run
repeats exactly what an uninterrupted one would have done.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import logging
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import yaml
from tqdm.auto import tqdm

from cdvideo.data import checkpoint, weights
from cdvideo.data.config import TrainConfig, to_dict
from cdvideo.data.files import atomic_path, sha256_file, write_text_atomic
from cdvideo.data.lock import main_rank, run_lock
from cdvideo.data.photos import Concept, load_folder, sample_batch
from cdvideo.data.video import is_video
from cdvideo.errors import CdvideoError
from cdvideo.math.losses import diffusion_target, masked_mse, semantic_preservation_loss
from cdvideo.models.loading import load_components
from cdvideo.models.single_file import is_single_file
from cdvideo.models.text import add_tokens, encode_distinct, eos_features, splice_token_rows, unsplice
from cdvideo.tasks.latents import LatentPool
from cdvideo.tasks.latents import sample as sample_latents
from cdvideo.tasks.prior import attach_class_images
from cdvideo.tasks.timing import NO_TIMER
from cdvideo.tasks.validation import render_validation

log = logging.getLogger(__name__)
PRECISION = {"no": "float32", "fp16": "float16", "bf16": "bfloat16"}  # mixed_precision -> dtype name
OWNED = ("weights.safetensors", "config.yaml", "checkpoints", "validation", "logs", "subject_frames")


class TrainingStopped(Exception):
    """Raised by `train` when `should_stop()` said so: the step reached is saved as a checkpoint (resume=latest)."""

    def __init__(self, step: int, folder: Path):
        super().__init__(f"stopped at step {step}; checkpoint {folder}")
        self.step, self.folder = step, folder


def train(cfg: TrainConfig, on_step: Callable[[int, Mapping], None] | None = None,
          timer=NO_TIMER, should_stop: Callable[[], bool] | None = None) -> Path | None:
    """Run a training config to the end; returns the weights file's path (None in non-main processes).

    `on_step(step, logs)` is called after every step; reading a value of `logs` synchronises with the device.
    `timer` (a `timing.StepTimer`) splits each step's time into sections, for benchmarks. `should_stop()` is asked
    after every step: True saves a checkpoint and raises `TrainingStopped` (the web app's Cancel). The main process
    holds `output_dir`'s lock (one writer per run folder) from before its checks to the end."""
    with run_lock(cfg.output_dir) if main_rank() else contextlib.nullcontext():
        return _train(cfg, on_step, timer, should_stop)


def _train(cfg: TrainConfig, on_step: Callable[[int, Mapping], None] | None, timer,
           should_stop: Callable[[], bool] | None) -> Path | None:
    from accelerate import Accelerator  # lazy: start-up time
    from accelerate.utils import ProjectConfiguration  # lazy: start-up time
    from diffusers.optimization import get_scheduler  # lazy: start-up time

    # -- Checks and data: every user mistake surfaces before anything is written -----------------------------
    out = Path(cfg.output_dir)
    check_output_dir(cfg)
    forget_previous_run()
    try:
        acc = Accelerator(mixed_precision=cfg.mixed_precision, cpu=not torch.cuda.is_available(),
                          project_config=ProjectConfiguration(str(out), logging_dir=str(out / "logs")),
                          log_with=None if cfg.report_to == "none" else "tensorboard")
    except ValueError as e:
        raise CdvideoError(f"mixed_precision={cfg.mixed_precision}: {e}") from None
    dev, wdtype = acc.device, weights.DTYPES[PRECISION[cfg.mixed_precision]]
    concepts = [Concept(c.token, c.class_word, load_folder(c.images, video_frames=c.video_frames, masks=c.masks),
                        cfg.instance_template.format(token=c.spelled(), class_word=c.class_word),
                        unmasked_weight=cfg.unmasked_weight)
                for c in cfg.concepts]

    # -- Models: base components, class images for the prior, the new tokens ---------------------------------
    m = load_components(cfg.model, cfg.revision, cfg.variant, config=cfg.model_config)
    tokenizer, text_encoder, vae, unet, noise_scheduler = (
        m["tokenizer"], m["text_encoder"], m["vae"], m["unet"], m["scheduler"])
    token_ids = add_tokens(tokenizer, text_encoder, cfg.added_tokens(), cfg.token_initializers())
    if cfg.prior.enabled:
        attach_class_images(cfg, concepts, m, acc)
    factor = 2 ** (len(vae.config.block_out_channels) - 1)
    if acc.is_main_process:
        reset_output_dir(cfg)
        write_text_atomic(out / "config.yaml", yaml.safe_dump(to_dict(cfg), sort_keys=False))
        save_video_frames(cfg, concepts, out)
        acc.init_trackers("cdvideo")

    # -- Trainable parameters: spatial cross-attention K/V (+ Q/out) and the new token rows -----------------
    kv_names, kv = select_trainable(cfg, vae, unet, text_encoder, dev, wdtype)
    rows = splice_token_rows(text_encoder, token_ids)  # (N, D): nothing touches the other ~49k rows
    params = kv + [rows.rows]

    # -- Optimizer and LR schedule ---------------------------------------------------------------------------
    o = cfg.optimizer
    scale = cfg.batch_size * cfg.gradient_accumulation_steps * acc.num_processes if o.scale_lr else 1
    groups = params if o.token_learning_rate is None else [  # one group unless asked: older checkpoints resume
        {"params": kv}, {"params": [rows.rows], "lr": o.token_learning_rate * scale}]
    optimizer = make_optimizer(o.use_8bit_adam, dev)(groups, lr=o.learning_rate * scale, betas=o.betas,
                                                     weight_decay=o.weight_decay, eps=o.eps)
    lr_scheduler = get_scheduler(o.lr_scheduler, optimizer, num_warmup_steps=o.lr_warmup_steps,
                                 num_training_steps=cfg.max_steps)
    if cfg.compile:
        unet.compile()
    unet, optimizer = acc.prepare(unet, optimizer)  # the text encoder stays unwrapped: its one grad is reduced

    # -- SPL: the class-phrase features are fixed, computed once ---------------------------------------------
    with torch.no_grad():
        class_feats = eos_features(text_encoder, tokenizer, [
            cfg.spl.class_template.format(class_word=c.class_word) for c in cfg.concepts], cfg.spl.pooling)
    personal = [cfg.spl.personal_template.format(token=c.spelled(), class_word=c.class_word) for c in cfg.concepts]

    # -- Latents: each photo (or a pool of augmented variants) encoded once ---------------------------------
    pool = None
    if cfg.latent_pool != "off":
        with timer("setup/latent_pool"):
            pool = LatentPool(concepts, cfg, factor, vae, dev, wdtype, np.random.default_rng([cfg.seed, 7]))
        log.info("latent pool: %s encoded variants (%s)", "+".join(map(str, pool.sizes)),
                 "augmented" if cfg.augment else "photos and mirrors")
    models = {"vae": vae, "unet": unet, "text_encoder": text_encoder, "tokenizer": tokenizer, "factor": factor,
              "scheduler": noise_scheduler, "class_feats": class_feats, "personal": personal, "acc": acc,
              "pool": pool, "concepts": concepts, "timer": timer}

    # -- Resume ----------------------------------------------------------------------------------------------
    step = 0
    if cfg.resume:
        step = restore(cfg, acc.unwrap_model(unet), rows, optimizer, lr_scheduler)

    # -- Steps -----------------------------------------------------------------------------------------------
    pbar = tqdm(total=cfg.max_steps, initial=step, desc="train", disable=not acc.is_local_main_process)
    pending: list[tuple[int, dict]] = []  # per-step losses as device tensors, read every `log_every` steps
    while step < cfg.max_steps:
        logs = {"loss": 0.0, "loss/reconstruction": 0.0, "loss/spl": 0.0}
        for micro in range(cfg.gradient_accumulation_steps):
            rng = np.random.default_rng([cfg.seed, acc.process_index, step, micro])
            loss, parts = step_loss(cfg, models, step, rng)
            with timer.backward("backward"):
                acc.backward(loss / cfg.gradient_accumulation_steps)
            if acc.num_processes > 1:  # the K/V sync through DDP; the token rows here
                rows.rows.grad = acc.reduce(rows.rows.grad, reduction="mean")
            for k, v in (("loss", loss), *parts.items()):
                logs[k] = logs.get(k, 0.0) + v.detach() / cfg.gradient_accumulation_steps
        with timer("optimizer"):
            acc.clip_grad_norm_(params, o.max_grad_norm)
            optimizer.step()
            lr_scheduler.step()
            optimizer.zero_grad(set_to_none=True)
        step += 1
        with timer("bookkeeping"):
            logs["lr"] = lr_scheduler.get_last_lr()[0]
            pending.append((step, logs))
            at_checkpoint = bool(cfg.checkpoint_every and step % cfg.checkpoint_every == 0)
            if step % cfg.log_every == 0 or step == cfg.max_steps or at_checkpoint:
                flush_logs(cfg, acc, pbar, pending)  # syncs; stops on a NaN before a checkpoint could keep it
            pbar.update(1)
            stop = should_stop is not None and should_stop()
            if stop and not at_checkpoint:
                flush_logs(cfg, acc, pbar, pending)  # never keep a NaN state
            if acc.is_main_process and (at_checkpoint or stop):
                checkpoint.save(out, step, {
                    "trainable": trainable_state(acc.unwrap_model(unet), kv_names, rows),
                    "optimizer": optimizer.state_dict(), "lr_scheduler": lr_scheduler.state_dict(),
                    "tokens": cfg.added_tokens()}, keep=cfg.checkpoints_total_limit)
            if acc.is_main_process and cfg.validation.every and step % cfg.validation.every == 0:
                render_validation(cfg, m, acc.unwrap_model(unet), text_encoder, out, step)
        timer.step_done()
        if on_step is not None:
            on_step(step, LazyLogs(logs))
        if stop:
            pbar.close()
            raise TrainingStopped(step, checkpoint.checkpoint_dir(out, step))
    pbar.close()

    # -- Weights file ----------------------------------------------------------------------------------------
    acc.wait_for_everyone()
    path = out / "weights.safetensors"
    if acc.is_main_process:
        save_weights(cfg, trainable_state(acc.unwrap_model(unet), kv_names, rows), path)
    unsplice(text_encoder)
    acc.wait_for_everyone()  # every process tears the process group down together, once the weights are written
    del unet, models  # the DDP wrapper goes first, while the process group lives: see release_ddp
    release_ddp(acc)
    acc.end_training()
    return path if acc.is_main_process else None


class LazyLogs(Mapping):
    """A step's logs; a value is read from the device (a sync) only when asked for."""

    def __init__(self, logs: dict):
        self._logs = logs

    def __getitem__(self, key: str) -> float:
        v = self._logs[key]
        return float(v.item()) if isinstance(v, torch.Tensor) else float(v)

    def __iter__(self):
        return iter(self._logs)

    def __len__(self) -> int:
        return len(self._logs)


def flush_logs(cfg: TrainConfig, acc, pbar, pending: list) -> None:
    """Read the pending steps' losses (one sync), stop at the first non-finite one, log and show the last."""
    if not pending:  # a stop right after a flush
        return
    for step, logs in pending:
        values = {k: float(v.item()) if isinstance(v, torch.Tensor) else v for k, v in logs.items()}
        if not math.isfinite(values["loss"]):
            raise nan_error(cfg, step, values["loss"])
        acc.log(values, step=step)
    pbar.set_postfix(loss=f"{values['loss']:.4f}", spl=f"{values['loss/spl']:.4f}", lr=f"{values['lr']:.2e}")
    pending.clear()


def step_loss(cfg: TrainConfig, models: dict, step: int, rng: np.random.Generator) -> tuple[torch.Tensor, dict]:
    """Masked noise-prediction MSE (+ prior) + lambda * SPL for one batch; (loss, its parts)."""
    vae, unet, text_encoder, tokenizer, sched, acc, timer = (models[k] for k in (
        "vae", "unet", "text_encoder", "tokenizer", "scheduler", "acc", "timer"))
    dev, wdtype = acc.device, weights.DTYPES[PRECISION[cfg.mixed_precision]]
    with timer("batch"):
        if models["pool"] is not None:
            batch = models["pool"].batch(models["concepts"], cfg.batch_size, step, rng)
        else:
            batch = sample_batch(models["concepts"], cfg.batch_size, step, rng, cfg.resolution, models["factor"],
                                 cfg.augment, cfg.flip)
    gen = torch.Generator(dev).manual_seed(int(rng.integers(2**62)))  # the step's noise, after its picks
    prompts = batch["prompts"] + batch.get("class_prompts", [])  # prior preservation: class images ride along
    with timer("vae"):
        if "latent_mean" in batch:
            latents = sample_latents(batch, gen)
        else:
            pixels = torch.cat([batch["pixels"], batch.get("class_pixels", batch["pixels"][:0])])  # (B, 3, H, W)
            with torch.no_grad():
                latents = vae.encode(pixels.to(dev, wdtype)).latent_dist.sample(gen) * vae.config.scaling_factor
        latents = latents.float()  # (B, 4, H/8, W/8)
    noise = torch.randn(latents.shape, generator=gen, device=dev)
    t = torch.randint(0, sched.config.num_train_timesteps, (len(latents),), generator=gen, device=dev)
    noisy = sched.add_noise(latents, noise, t)
    if cfg.channels_last:
        noisy = noisy.contiguous(memory_format=torch.channels_last)
    with timer("text"):
        cond = encode_distinct(text_encoder, tokenizer, prompts)  # (B, 77, D), each distinct prompt encoded once
    timer.mark_backward(cond, "text_backward")
    with timer("unet_forward"), acc.autocast():
        pred = unet(noisy.to(wdtype), t, cond.to(wdtype)).sample.float()  # (B, 4, H/8, W/8)
    target = diffusion_target(sched.config.prediction_type, latents, noise, sched.alphas_cumprod.to(dev), t)
    n = cfg.batch_size
    rec = masked_mse(pred[:n], target[:n], batch["mask"].to(dev))
    parts = {"loss/reconstruction": rec}
    if len(pred) > n:  # the class images' plain MSE (DreamBooth's prior preservation), logged on its own
        parts["loss/prior"] = torch.nn.functional.mse_loss(pred[n:], target[n:])
        rec = rec + cfg.prior.weight * parts["loss/prior"]
    with timer("spl"), torch.set_grad_enabled(cfg.spl.weight != 0):  # without SPL: logged, forward only
        spl = semantic_preservation_loss(eos_features(text_encoder, tokenizer, models["personal"], cfg.spl.pooling),
                                         models["class_feats"])
    return rec + cfg.spl.weight * spl, {**parts, "loss/spl": spl}


def select_trainable(cfg: TrainConfig, vae, unet, text_encoder, dev, wdtype) -> tuple[list[str], list]:
    """Freeze everything, move to device/dtype, then unfreeze the K/V (fp32 master weights)."""
    for module in (vae, unet, text_encoder):
        module.requires_grad_(False)
    for module in (vae, unet):
        module.to(dev)
        if wdtype != torch.float32:
            module.to(wdtype)
    text_encoder.to(dev)  # kept in fp32: its token rows are trained
    if cfg.channels_last:
        unet.to(memory_format=torch.channels_last)
    names = weights.cross_attention_names(unet, cfg.params)
    params = dict(unet.named_parameters())
    kv = [params[n] for n in names]
    for p in kv:
        p.data = p.data.float()
        p.requires_grad_(True)
    if cfg.gradient_checkpointing:
        unet.enable_gradient_checkpointing()
        text_encoder.gradient_checkpointing_enable()
        text_encoder.train()  # transformers checkpoints only in train mode; CLIP has no dropout
    return names, kv


def make_optimizer(use_8bit: bool, device: torch.device):
    """torch AdamW (fused kernels on CUDA), or bitsandbytes' 8-bit AdamW (optional extra `cdvideo[8bit]`)."""
    if not use_8bit:
        return functools.partial(torch.optim.AdamW, fused=True) if device.type == "cuda" else torch.optim.AdamW
    try:
        import bitsandbytes as bnb  # lazy: start-up time
    except ImportError:
        raise CdvideoError("optimizer.use_8bit_adam needs bitsandbytes: pip install 'cdvideo[8bit]'") from None
    return bnb.optim.AdamW8bit


def release_ddp(acc) -> None:
    """Free the DDP wrapper (accelerate's reference to it, then its cycles) before the process group is destroyed.
    torch's Reducer, when it holds the group last, frees it with the GIL held and joins gloo's worker threads,
    which may be waiting for the GIL to free a finished collective's tensors: a hang at exit (1 launched run in 7
    on two busy cores). Freed while the group lives, the group goes later through a destructor that drops the GIL."""
    acc.free_memory()
    gc.collect()


def forget_previous_run() -> None:
    """accelerate keeps one state per process and refuses another mixed precision in a second run (the web app,
    tests): drop the earlier run's state when there is one process (a launched run is one run per process)."""
    from accelerate.state import AcceleratorState, PartialState  # lazy: start-up time

    if AcceleratorState._shared_state and PartialState().num_processes == 1:
        AcceleratorState._reset_state()


def save_weights(cfg: TrainConfig, state: dict, path: Path) -> None:
    """The run's weights file: trained K/V and token rows, with the base, tokens and config as metadata."""
    weights.save(path, weights.PersonalWeights(
        unet=state["unet"], tokens=cfg.added_tokens(), class_words=cfg.token_class_words(),
        embeddings=state["token_embeddings"],
        metadata={"base_model": cfg.model, "base_revision": cfg.revision or "", "config": to_dict(cfg),
                  "initializers": cfg.token_initializers(), **base_record(cfg)},
    ), dtype=cfg.save_dtype)


def trainable_state(unet, kv_names: list[str], rows) -> dict:
    params = dict(unet.named_parameters())
    return {"unet": {n: params[n].detach().cpu().clone() for n in kv_names},
            "token_embeddings": rows.rows.detach().cpu().clone()}


def restore(cfg: TrainConfig, unet, rows, optimizer, lr_scheduler) -> int:
    """Load a checkpoint's trainable tensors, optimizer, schedule and RNG; returns its step."""
    folder = checkpoint.resolve_resume(cfg.output_dir, cfg.resume)
    state = checkpoint.load(folder)
    if state["tokens"] != cfg.added_tokens():
        raise CdvideoError(f"resume: {folder} was trained for tokens {state['tokens']}, not this config's")
    params = dict(unet.named_parameters())
    with torch.no_grad():
        for n, t in state["trainable"]["unet"].items():
            params[n].copy_(t)
        rows.rows.copy_(state["trainable"]["token_embeddings"])
    optimizer.load_state_dict(state["optimizer"])
    lr_scheduler.load_state_dict(state["lr_scheduler"])
    checkpoint.set_rng_state(state["rng"])
    log.info("resumed from %s (step %d)", folder, state["step"])
    return int(state["step"])


def check_output_dir(cfg: TrainConfig) -> None:
    """Refuse to overwrite an earlier run unless `overwrite: true` (or `resume` continues it)."""
    checkpoint.check_run_folder(cfg.output_dir, OWNED, "weights.safetensors", cfg.resume, cfg.overwrite)


def reset_output_dir(cfg: TrainConfig) -> None:
    """Create the output folder; with `overwrite: true` (and no resume), remove the earlier run's files."""
    checkpoint.reset_run_folder(cfg.output_dir, OWNED, cfg.resume, cfg.overwrite)


def save_video_frames(cfg: TrainConfig, concepts: list[Concept], out: Path) -> None:
    """The frames picked from a subject video, in output_dir/subject_frames/<token>/, to see what was trained on."""

    for c, concept in zip(cfg.concepts, concepts):
        if is_video(c.images):
            folder = out / "subject_frames" / c.token
            for i, image in enumerate(concept.images):
                with atomic_path(folder / f"{i:02d}.png") as tmp:
                    image.save(tmp, format="PNG")
            log.info("trained on %d frames of %s: %s", len(concept.images), c.images, folder)


def base_record(cfg: TrainConfig) -> dict:
    """For a one-file base: its sha256 (so `animate` can check it gets the same base) and how it was read."""

    if not is_single_file(cfg.model):
        return {}
    return {"base_sha256": sha256_file(cfg.model), "base_config": cfg.model_config or "sd15"}


def nan_error(cfg: TrainConfig, step: int, loss: float) -> CdvideoError:
    found = checkpoint.list_checkpoints(cfg.output_dir)
    last = f"last good checkpoint: {found[-1]}" if found else "no checkpoint was saved yet"
    value = "NaN" if math.isnan(loss) else str(loss)
    return CdvideoError(f"loss became {value} at step {step}; stopped without writing weights ({last}). "
                        "Lower optimizer.learning_rate or use mixed_precision=no, then resume=latest")
