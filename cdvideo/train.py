"""ClassDiffusion fine-tuning: cross-attention K/V + new token rows, noise MSE + lambda * SPL.

One loop, sections in order: output folder, data, models, trainable parameters, optimizer, SPL targets,
resume, steps, weights file. All randomness of a step derives from (seed, process, step), so a resumed run
repeats exactly what an uninterrupted one would have done.
"""

from __future__ import annotations

import logging
import math
import shutil
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import yaml
from tqdm.auto import tqdm

from . import checkpoint, weights
from .config import TrainConfig, to_dict
from .data import Concept, load_folder, sample_batch
from .errors import CdvideoError
from .files import write_text_atomic
from .losses import diffusion_target, masked_mse, semantic_preservation_loss
from .models import load_components
from .text import add_tokens, encode_prompts, eos_features

log = logging.getLogger(__name__)
DTYPES = {"no": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
OWNED = ("weights.safetensors", "config.yaml", "checkpoints", "validation", "logs")


def train(cfg: TrainConfig, on_step: Callable[[int, dict], None] | None = None) -> Path | None:
    """Run a training config to the end; returns the weights file's path (None in non-main processes)."""
    from accelerate import Accelerator
    from accelerate.utils import ProjectConfiguration
    from diffusers.optimization import get_scheduler

    # -- Checks and data: every user mistake surfaces before anything is written -----------------------------
    out = Path(cfg.output_dir)
    check_output_dir(cfg)
    try:
        acc = Accelerator(mixed_precision=cfg.mixed_precision, cpu=not torch.cuda.is_available(),
                          project_config=ProjectConfiguration(str(out), logging_dir=str(out / "logs")),
                          log_with=None if cfg.report_to == "none" else "tensorboard")
    except ValueError as e:
        raise CdvideoError(f"mixed_precision={cfg.mixed_precision}: {e}") from None
    dev, wdtype = acc.device, DTYPES[cfg.mixed_precision]
    concepts = [Concept(c.token, c.class_word, load_folder(c.images),
                        cfg.instance_template.format(token=c.token, class_word=c.class_word))
                for c in cfg.concepts]

    # -- Models: base components, class images for the prior, the new tokens ---------------------------------
    m = load_components(cfg.model, cfg.revision, cfg.variant)
    tokenizer, text_encoder, vae, unet, noise_scheduler = (
        m["tokenizer"], m["text_encoder"], m["vae"], m["unet"], m["scheduler"])
    token_ids = add_tokens(tokenizer, text_encoder, [c.token for c in cfg.concepts],
                           [c.initializer or c.class_word for c in cfg.concepts])
    if cfg.prior.enabled:
        from .prior import attach_class_images
        attach_class_images(cfg, concepts, m, acc)
    factor = 2 ** (len(vae.config.block_out_channels) - 1)
    if acc.is_main_process:
        reset_output_dir(cfg)
        write_text_atomic(out / "config.yaml", yaml.safe_dump(to_dict(cfg), sort_keys=False))
        acc.init_trackers("cdvideo")

    # -- Trainable parameters: spatial cross-attention K/V (+ Q/out) and the new token rows -----------------
    kv_names, kv, emb = select_trainable(cfg, vae, unet, text_encoder, dev, wdtype)
    keep_rows = torch.ones(emb.shape[0], dtype=torch.bool, device=dev)
    keep_rows[token_ids] = False
    emb.register_hook(lambda g: g.masked_fill(keep_rows[:, None], 0.0))  # zero gradient for all other rows
    frozen_rows = emb.detach().clone()  # restored after each step, so weight decay cannot move them

    # -- Optimizer and LR schedule ---------------------------------------------------------------------------
    o = cfg.optimizer
    lr = o.learning_rate * (cfg.batch_size * cfg.gradient_accumulation_steps * acc.num_processes
                            if o.scale_lr else 1)
    optimizer = make_optimizer(o.use_8bit_adam)(kv + [emb], lr=lr, betas=o.betas,
                                                weight_decay=o.weight_decay, eps=o.eps)
    lr_scheduler = get_scheduler(o.lr_scheduler, optimizer, num_warmup_steps=o.lr_warmup_steps,
                                 num_training_steps=cfg.max_steps)
    unet, optimizer = acc.prepare(unet, optimizer)  # the text encoder stays unwrapped: its one grad is reduced

    # -- SPL: the class-phrase features are fixed, computed once ---------------------------------------------
    with torch.no_grad():
        class_feats = eos_features(text_encoder, tokenizer, [
            cfg.spl.class_template.format(class_word=c.class_word) for c in cfg.concepts], cfg.spl.pooling)
    personal = [cfg.spl.personal_template.format(token=c.token, class_word=c.class_word) for c in cfg.concepts]
    models = {"vae": vae, "unet": unet, "text_encoder": text_encoder, "tokenizer": tokenizer,
              "scheduler": noise_scheduler, "class_feats": class_feats, "personal": personal, "acc": acc}

    # -- Resume ----------------------------------------------------------------------------------------------
    step = 0
    if cfg.resume:
        step = restore(cfg, acc.unwrap_model(unet), emb, token_ids, optimizer, lr_scheduler)

    # -- Steps -----------------------------------------------------------------------------------------------
    pbar = tqdm(total=cfg.max_steps, initial=step, desc="train", disable=not acc.is_local_main_process)
    while step < cfg.max_steps:
        logs = {"loss": 0.0, "loss/reconstruction": 0.0, "loss/spl": 0.0}
        for micro in range(cfg.gradient_accumulation_steps):
            rng = np.random.default_rng([cfg.seed, acc.process_index, step, micro])
            batch = sample_batch(concepts, cfg.batch_size, step, rng, cfg.resolution, factor, cfg.augment, cfg.flip)
            loss, parts = step_loss(cfg, models, batch, torch.Generator(dev).manual_seed(int(rng.integers(2**62))))
            if not torch.isfinite(loss):
                raise nan_error(cfg, step + 1, loss)
            acc.backward(loss / cfg.gradient_accumulation_steps)
            if acc.num_processes > 1:  # the K/V sync through DDP; the token rows here
                emb.grad = acc.reduce(emb.grad, reduction="mean")
            for k, v in (("loss", loss), *parts.items()):
                logs[k] += v.item() / cfg.gradient_accumulation_steps
        acc.clip_grad_norm_(kv + [emb], o.max_grad_norm)
        optimizer.step()
        lr_scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        with torch.no_grad():
            emb[keep_rows] = frozen_rows[keep_rows]
        step += 1
        logs["lr"] = lr_scheduler.get_last_lr()[0]
        acc.log(logs, step=step)
        pbar.update(1)
        pbar.set_postfix(loss=f"{logs['loss']:.4f}", spl=f"{logs['loss/spl']:.4f}", lr=f"{logs['lr']:.2e}")
        if acc.is_main_process and cfg.checkpoint_every and step % cfg.checkpoint_every == 0:
            checkpoint.save(out, step, {
                "trainable": trainable_state(acc.unwrap_model(unet), kv_names, emb, token_ids),
                "optimizer": optimizer.state_dict(), "lr_scheduler": lr_scheduler.state_dict(),
                "tokens": [c.token for c in cfg.concepts]}, keep=cfg.checkpoints_total_limit)
        if acc.is_main_process and cfg.validation.every and step % cfg.validation.every == 0:
            from .pipelines import render_validation
            render_validation(cfg, m, acc.unwrap_model(unet), text_encoder, out, step)
        if on_step is not None:
            on_step(step, logs)
    pbar.close()

    # -- Weights file ----------------------------------------------------------------------------------------
    acc.wait_for_everyone()
    path = out / "weights.safetensors"
    if acc.is_main_process:
        state = trainable_state(acc.unwrap_model(unet), kv_names, emb, token_ids)
        weights.save(path, weights.PersonalWeights(
            unet=state["unet"], tokens=[c.token for c in cfg.concepts],
            class_words=[c.class_word for c in cfg.concepts], embeddings=state["token_embeddings"],
            metadata={"base_model": cfg.model, "base_revision": cfg.revision or "", "config": to_dict(cfg),
                      "initializers": [c.initializer or c.class_word for c in cfg.concepts]},
        ), dtype=cfg.save_dtype)
    acc.end_training()
    return path if acc.is_main_process else None


def step_loss(cfg: TrainConfig, models: dict, batch: dict, gen: torch.Generator) -> tuple[torch.Tensor, dict]:
    """Masked noise-prediction MSE (+ prior) + lambda * SPL for one batch; (loss, its parts)."""
    vae, unet, text_encoder, tokenizer, sched, acc = (models[k] for k in (
        "vae", "unet", "text_encoder", "tokenizer", "scheduler", "acc"))
    dev, wdtype = acc.device, DTYPES[cfg.mixed_precision]
    pixels, prompts = batch["pixels"], batch["prompts"]  # (B, 3, H, W)
    if "class_pixels" in batch:  # prior preservation: class images ride in the same batch
        pixels = torch.cat([pixels, batch["class_pixels"]])  # (2B, 3, H, W)
        prompts = prompts + batch["class_prompts"]
    with torch.no_grad():
        latents = vae.encode(pixels.to(dev, wdtype)).latent_dist.sample(gen) * vae.config.scaling_factor
    latents = latents.float()  # (B, 4, H/8, W/8)
    noise = torch.randn(latents.shape, generator=gen, device=dev)
    t = torch.randint(0, sched.config.num_train_timesteps, (len(latents),), generator=gen, device=dev)
    noisy = sched.add_noise(latents, noise, t)
    cond = encode_prompts(text_encoder, tokenizer, prompts)  # (B, 77, D)
    with acc.autocast():
        pred = unet(noisy.to(wdtype), t, cond.to(wdtype)).sample.float()  # (B, 4, H/8, W/8)
    target = diffusion_target(sched.config.prediction_type, latents, noise, sched.alphas_cumprod.to(dev), t)
    n = cfg.batch_size
    rec = masked_mse(pred[:n], target[:n], batch["mask"].to(dev))
    if len(pred) > n:
        rec = rec + cfg.prior.weight * torch.nn.functional.mse_loss(pred[n:], target[n:])
    with torch.set_grad_enabled(cfg.spl.weight != 0):  # without SPL it is still logged, forward only
        spl = semantic_preservation_loss(eos_features(text_encoder, tokenizer, models["personal"], cfg.spl.pooling),
                                         models["class_feats"])
    return rec + cfg.spl.weight * spl, {"loss/reconstruction": rec, "loss/spl": spl}


def select_trainable(cfg: TrainConfig, vae, unet, text_encoder, dev, wdtype) -> tuple[list[str], list, torch.Tensor]:
    """Freeze everything, move to device/dtype, then unfreeze the K/V (fp32 master weights) and the embedding."""
    for module in (vae, unet, text_encoder):
        module.requires_grad_(False)
    for module in (vae, unet):
        module.to(dev)
        if wdtype != torch.float32:
            module.to(wdtype)
    text_encoder.to(dev)  # kept in fp32: its embedding rows are trained
    names = weights.cross_attention_names(unet, cfg.params)
    params = dict(unet.named_parameters())
    kv = [params[n] for n in names]
    for p in kv:
        p.data = p.data.float()
        p.requires_grad_(True)
    emb = text_encoder.get_input_embeddings().weight  # (V, D)
    emb.requires_grad_(True)
    if cfg.gradient_checkpointing:
        unet.enable_gradient_checkpointing()
        text_encoder.gradient_checkpointing_enable()
        text_encoder.train()  # transformers checkpoints only in train mode; CLIP has no dropout
    return names, kv, emb


def make_optimizer(use_8bit: bool):
    """torch AdamW, or bitsandbytes' 8-bit AdamW (optional extra `cdvideo[8bit]`)."""
    if not use_8bit:
        return torch.optim.AdamW
    try:
        import bitsandbytes as bnb
    except ImportError:
        raise CdvideoError("optimizer.use_8bit_adam needs bitsandbytes: pip install 'cdvideo[8bit]'") from None
    return bnb.optim.AdamW8bit


def trainable_state(unet, kv_names: list[str], emb: torch.Tensor, token_ids: list[int]) -> dict:
    params = dict(unet.named_parameters())
    return {"unet": {n: params[n].detach().cpu().clone() for n in kv_names},
            "token_embeddings": emb.detach()[token_ids].cpu().clone()}


def restore(cfg: TrainConfig, unet, emb: torch.Tensor, token_ids: list[int], optimizer, lr_scheduler) -> int:
    """Load a checkpoint's trainable tensors, optimizer, schedule and RNG; returns its step."""
    folder = checkpoint.resolve_resume(cfg.output_dir, cfg.resume)
    state = checkpoint.load(folder)
    if state["tokens"] != [c.token for c in cfg.concepts]:
        raise CdvideoError(f"resume: {folder} was trained for tokens {state['tokens']}, not this config's")
    params = dict(unet.named_parameters())
    with torch.no_grad():
        for n, t in state["trainable"]["unet"].items():
            params[n].copy_(t)
        emb[token_ids] = state["trainable"]["token_embeddings"].to(emb)
    optimizer.load_state_dict(state["optimizer"])
    lr_scheduler.load_state_dict(state["lr_scheduler"])
    checkpoint.set_rng_state(state["rng"])
    log.info("resumed from %s (step %d)", folder, state["step"])
    return int(state["step"])


def check_output_dir(cfg: TrainConfig) -> None:
    """Refuse to overwrite an earlier run unless `overwrite: true` (or `resume` continues it)."""
    out = Path(cfg.output_dir)
    weights_file = out / "weights.safetensors"
    if cfg.resume:
        if weights_file.exists() and not cfg.overwrite:
            raise CdvideoError(f"{weights_file} exists: this run already finished; set overwrite=true to redo it")
        checkpoint.resolve_resume(out, cfg.resume)
        return
    taken = [name for name in OWNED if (out / name).exists()]
    if taken and not cfg.overwrite:
        raise CdvideoError(f"output_dir {out} already holds a run ({', '.join(taken)}); continue it with "
                           "resume=latest, choose another output_dir, or set overwrite=true")


def reset_output_dir(cfg: TrainConfig) -> None:
    """Create the output folder; with `overwrite: true` (and no resume), remove the earlier run's files."""
    out = Path(cfg.output_dir)
    if cfg.overwrite and not cfg.resume:
        for name in OWNED:
            path = out / name
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()
    out.mkdir(parents=True, exist_ok=True)


def nan_error(cfg: TrainConfig, step: int, loss: torch.Tensor) -> CdvideoError:
    found = checkpoint.list_checkpoints(cfg.output_dir)
    last = f"last good checkpoint: {found[-1]}" if found else "no checkpoint was saved yet"
    value = "NaN" if math.isnan(loss.item()) else str(loss.item())
    return CdvideoError(f"loss became {value} at step {step}; stopped without writing weights ({last}). "
                        "Lower optimizer.learning_rate or use mixed_precision=no, then resume=latest")
