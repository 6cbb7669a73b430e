"""ClassDiffusion fine-tuning: cross-attention K/V + new token rows, noise MSE + lambda * SPL.

Sections in order: checks and data, models, trainable parameters, optimizer, SPL targets, latents (`prepare`),
then resume, steps and the weights file (`_train`, one loop); the run folder's files are `train_run`'s. All
randomness of a step derives from (seed, process, step), so a resumed run repeats exactly what an uninterrupted
one would have done.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import yaml
from tqdm.auto import tqdm

from cdvideo.data import checkpoint, weights
from cdvideo.data.config import TrainConfig, to_dict
from cdvideo.data.files import write_text_atomic
from cdvideo.data.lock import main_rank, run_lock
from cdvideo.data.photos import Concept, load_folder, sample_batch
from cdvideo.errors import CdvideoError
from cdvideo.math.losses import (diffusion_target, masked_mse, min_snr_weight, semantic_preservation_loss,
                                 signal_to_noise)
from cdvideo.models.loading import load_components
from cdvideo.models.text import add_tokens, encode_distinct, eos_features, splice_token_rows, unsplice
from cdvideo.tasks.latents import LatentPool
from cdvideo.tasks.latents import sample as sample_latents
from cdvideo.tasks.prior import attach_class_images
from cdvideo.tasks.timing import NO_TIMER
from cdvideo.tasks.train_run import (check_output_dir, nan_error, reset_output_dir, restore, save_video_frames,
                                     save_weights, trainable_state)
from cdvideo.tasks.validation import render_validation

log = logging.getLogger(__name__)
PRECISION = {"no": "float32", "fp16": "float16", "bf16": "bfloat16"}  # mixed_precision -> dtype name


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
        path = _train(cfg, on_step, timer, should_stop)
    gc.collect()  # the run's models, in reference cycles, go now: a long-lived process (the web app) trains again
    return path


def _train(cfg: TrainConfig, on_step: Callable[[int, Mapping], None] | None, timer,
           should_stop: Callable[[], bool] | None) -> Path | None:
    run = prepare(cfg, timer)  # checks and data, models, trainable parameters, optimizer, SPL targets, latents
    acc, out = run.acc, Path(cfg.output_dir)

    # -- Resume ----------------------------------------------------------------------------------------------
    step = 0
    if cfg.resume:
        step = restore(cfg, acc.unwrap_model(run.unet), run.rows, run.optimizer, run.lr_scheduler)

    # -- Steps -----------------------------------------------------------------------------------------------
    pbar = tqdm(total=cfg.max_steps, initial=step, desc="train", disable=not acc.is_local_main_process)
    pending: list[tuple[int, dict]] = []  # per-step losses as device tensors, read every `log_every` steps
    while step < cfg.max_steps:
        logs = optimizer_step(cfg, run, step)
        step += 1
        with timer("bookkeeping"):
            logs["lr"] = run.lr_scheduler.get_last_lr()[0]
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
                    "trainable": trainable_state(acc.unwrap_model(run.unet), run.kv_names, run.rows),
                    "optimizer": run.optimizer.state_dict(), "lr_scheduler": run.lr_scheduler.state_dict(),
                    "tokens": cfg.added_tokens()}, keep=cfg.checkpoints_total_limit)
            if acc.is_main_process and cfg.validation.every and step % cfg.validation.every == 0:
                render_validation(cfg, run.m, acc.unwrap_model(run.unet), run.text_encoder, out, step)
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
        save_weights(cfg, trainable_state(acc.unwrap_model(run.unet), run.kv_names, run.rows), path)
    unsplice(run.text_encoder)
    acc.wait_for_everyone()  # every process tears the process group down together, once the weights are written
    del run  # the DDP wrapper goes first, while the process group lives: see release_ddp
    if acc.num_processes > 1:  # one process has no wrapper and no group: its run is collected once `train` returns
        release_ddp(acc)
    acc.end_training()
    return path if acc.is_main_process else None


@dataclass
class Run:
    """What the steps need: the base's components (`m`), the trainables (K/V names and tensors, the token rows),
    optimizer and schedule, and step_loss's models (the accelerator, the prepared UNet, the text encoder among them)."""
    m: dict
    kv_names: list[str]
    params: list
    rows: Any
    optimizer: Any
    lr_scheduler: Any
    models: dict

    @property
    def acc(self):
        return self.models["acc"]

    @property
    def unet(self):
        return self.models["unet"]

    @property
    def text_encoder(self):
        return self.models["text_encoder"]


def prepare(cfg: TrainConfig, timer) -> Run:
    """Every section before the steps, in order; the output folder is written only once every check passed."""
    out = Path(cfg.output_dir)

    # -- Checks and data: every user mistake surfaces before anything is written -----------------------------
    check_output_dir(cfg)
    acc = accelerator(cfg)
    dev, wdtype = acc.device, weights.DTYPES[PRECISION[cfg.mixed_precision]]
    concepts = [Concept(c.token, c.class_word, load_folder(c.images, video_frames=c.video_frames, masks=c.masks),
                        cfg.instance_template.format(token=c.spelled(), class_word=c.class_word),
                        unmasked_weight=cfg.unmasked_weight)
                for c in cfg.concepts]

    # -- Models: base components, class images for the prior, the new tokens ---------------------------------
    m = load_components(cfg.model, cfg.revision, cfg.variant, config=cfg.model_config)
    tokenizer, text_encoder, vae, unet = m["tokenizer"], m["text_encoder"], m["vae"], m["unet"]
    if cfg.max_timestep > (n := m["scheduler"].config.num_train_timesteps):
        raise CdvideoError(f"max_timestep: {cfg.max_timestep} is beyond the {n} noise levels of {cfg.model}; "
                           f"give at most {n}")
    token_ids = add_tokens(tokenizer, text_encoder, cfg.added_tokens(), cfg.token_initializers())
    if cfg.prior.enabled:
        attach_class_images(cfg, concepts, m, acc)
    if acc.is_main_process:
        reset_output_dir(cfg)
        write_text_atomic(out / "config.yaml", yaml.safe_dump(to_dict(cfg), sort_keys=False))
        save_video_frames(cfg, concepts, out)
        acc.init_trackers("cdvideo")

    # -- Trainable parameters: spatial cross-attention K/V (+ Q/out) and the new token rows -----------------
    kv_names, kv = select_trainable(cfg, vae, unet, text_encoder, dev, wdtype)
    rows = splice_token_rows(text_encoder, token_ids)  # (N, D): nothing touches the other ~49k rows

    # -- Optimizer and LR schedule ---------------------------------------------------------------------------
    optimizer, lr_scheduler = make_optimizer_and_schedule(cfg, acc, kv, rows.rows)
    if cfg.compile:
        unet.compile()
    unet, optimizer = acc.prepare(unet, optimizer)  # the text encoder stays unwrapped: its one grad is reduced

    # -- SPL: the class-phrase features are fixed, computed once ---------------------------------------------
    with torch.no_grad():
        class_feats = eos_features(text_encoder, tokenizer, [
            cfg.spl.class_template.format(class_word=c.class_word) for c in cfg.concepts], cfg.spl.pooling)
    personal = [cfg.spl.personal_template.format(token=c.spelled(), class_word=c.class_word) for c in cfg.concepts]

    # -- Latents: each photo (or a pool of augmented variants) encoded once ---------------------------------
    factor = 2 ** (len(vae.config.block_out_channels) - 1)
    pool = None
    if cfg.latent_pool != "off":
        with timer("setup/latent_pool"):
            pool = LatentPool(concepts, cfg, factor, vae, dev, wdtype, np.random.default_rng([cfg.seed, 7]))
        log.info("latent pool: %s encoded variants (%s)", "+".join(map(str, pool.sizes)),
                 "augmented" if cfg.augment else "photos and mirrors")
    models = {"vae": vae, "unet": unet, "text_encoder": text_encoder, "tokenizer": tokenizer, "factor": factor,
              "scheduler": m["scheduler"], "class_feats": class_feats, "personal": personal, "acc": acc,
              "pool": pool, "concepts": concepts, "timer": timer}
    return Run(m, kv_names, kv + [rows.rows], rows, optimizer, lr_scheduler, models)


def accelerator(cfg: TrainConfig):
    """The run's accelerate.Accelerator (the previous in-process run's state forgotten), logging into the run."""
    from accelerate import Accelerator  # lazy: start-up time
    from accelerate.utils import ProjectConfiguration  # lazy: start-up time

    out = Path(cfg.output_dir)
    forget_previous_run()
    try:
        return Accelerator(mixed_precision=cfg.mixed_precision, cpu=not torch.cuda.is_available(),
                           project_config=ProjectConfiguration(str(out), logging_dir=str(out / "logs")),
                           log_with=None if cfg.report_to == "none" else "tensorboard")
    except ValueError as e:
        raise CdvideoError(f"mixed_precision={cfg.mixed_precision}: {e}") from None


def make_optimizer_and_schedule(cfg: TrainConfig, acc, kv: list, rows: torch.Tensor) -> tuple:
    """AdamW over the K/V and the token rows (one group, or two with `optimizer.token_learning_rate`: older
    checkpoints resume), and its LR schedule."""
    from diffusers.optimization import get_scheduler  # lazy: start-up time

    o = cfg.optimizer
    scale = cfg.batch_size * cfg.gradient_accumulation_steps * acc.num_processes if o.scale_lr else 1
    groups = kv + [rows] if o.token_learning_rate is None else [
        {"params": kv}, {"params": [rows], "lr": o.token_learning_rate * scale}]
    optimizer = make_optimizer(o.use_8bit_adam, acc.device)(groups, lr=o.learning_rate * scale, betas=o.betas,
                                                            weight_decay=o.weight_decay, eps=o.eps)
    return optimizer, get_scheduler(o.lr_scheduler, optimizer, num_warmup_steps=o.lr_warmup_steps,
                                    num_training_steps=cfg.max_steps)


def optimizer_step(cfg: TrainConfig, run: Run, step: int) -> dict:
    """One optimizer step over `gradient_accumulation_steps` batches; the step's mean losses (device tensors)."""
    acc, timer = run.acc, run.models["timer"]
    logs = {"loss": 0.0, "loss/reconstruction": 0.0, "loss/spl": 0.0}
    for micro in range(cfg.gradient_accumulation_steps):
        rng = np.random.default_rng([cfg.seed, acc.process_index, step, micro])
        loss, parts = step_loss(cfg, run.models, step, rng)
        with timer.backward("backward"):
            acc.backward(loss / cfg.gradient_accumulation_steps)
        if acc.num_processes > 1:  # the K/V sync through DDP; the token rows here
            run.rows.rows.grad = acc.reduce(run.rows.rows.grad, reduction="mean")
        for k, v in (("loss", loss), *parts.items()):
            logs[k] = logs.get(k, 0.0) + v.detach() / cfg.gradient_accumulation_steps
    with timer("optimizer"):
        acc.clip_grad_norm_(run.params, cfg.optimizer.max_grad_norm)
        run.optimizer.step()
        run.lr_scheduler.step()
        run.optimizer.zero_grad(set_to_none=True)
    return logs


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
    """Masked noise-prediction MSE (+ prior; both Min-SNR-weighted where asked) + lambda * SPL for one batch; (loss,
    its parts)."""
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
    t = torch.randint(cfg.min_timestep, cfg.max_timestep, (len(latents),), generator=gen, device=dev)  # (B,)
    noisy = sched.add_noise(latents, noise, t)
    if cfg.channels_last:
        noisy = noisy.contiguous(memory_format=torch.channels_last)
    with timer("text"):
        cond = encode_distinct(text_encoder, tokenizer, prompts)  # (B, 77, D), each distinct prompt encoded once
    timer.mark_backward(cond, "text_backward")
    with timer("unet_forward"), acc.autocast():
        pred = unet(noisy.to(wdtype), t, cond.to(wdtype)).sample.float()  # (B, 4, H/8, W/8)
    target = diffusion_target(sched.config.prediction_type, latents, noise, sched.alphas_cumprod.to(dev), t)
    n, gamma = cfg.batch_size, cfg.min_snr_gamma
    w = None if gamma is None else min_snr_weight(signal_to_noise(sched.alphas_cumprod, t), gamma,
                                                  sched.config.prediction_type)  # (B,): Min-SNR's, or none
    rec = masked_mse(pred[:n], target[:n], batch["mask"].to(dev), None if w is None else w[:n])
    parts = {"loss/reconstruction": rec}
    if len(pred) > n:  # the class images' plain MSE (DreamBooth's prior preservation), logged on its own
        parts["loss/prior"] = torch.nn.functional.mse_loss(pred[n:], target[n:]) if w is None else \
            masked_mse(pred[n:], target[n:], torch.ones_like(pred[n:, :1]), w[n:])  # weighed alike
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
    on two busy cores). Freed while the group lives, the group goes later through a destructor that drops the GIL.
    Two full collections (accelerate's, before it drops its references, and ours): 0.5-1 s in a large process such
    as the web app's, so a single-process run skips them for the one `train` makes after the run."""
    acc.free_memory()
    gc.collect()


def forget_previous_run() -> None:
    """accelerate keeps one state per process and refuses another mixed precision in a second run (the web app,
    tests): drop the earlier run's state when there is one process (a launched run is one run per process)."""
    from accelerate.state import AcceleratorState, PartialState  # lazy: start-up time

    if AcceleratorState._shared_state and PartialState().num_processes == 1:
        AcceleratorState._reset_state()
