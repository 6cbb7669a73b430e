"""Stage 4: the UNet, a UNet2DConditionModel with SD1.5's block types (cross-attention at the 8 x 8 and 4 x 4 levels
and the mid block), trained on the encoded renders with the frozen text encoder: epsilon prediction under SD1.5's
DDPM schedule, min-SNR-5 loss weighting (Hang et al. ICCV 2023), 10% of captions dropped for classifier-free
guidance, an EMA of the weights. A quarter of each batch are clip frames captioned with their motion. Later rounds
weigh the loss up where the objects are (their coverage at latent resolution), where a pattern's colour is drawn; the
last adds contrast captions (each two-colour caption against the same words with the colours exchanged), which
bind each colour to its part."""

from __future__ import annotations

import copy
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from transformers import CLIPTextModel, CLIPTokenizer

from cdvideo.apps.worldbuild import common
from cdvideo.apps.worldbuild.common import (SD_SCHEDULE, UNET, Curve, log, mark_done, optimizer, optimizer_step,
    pretraining, round_plan, seed_everything, step_rngs)
from cdvideo.apps.worldbuild.plans import UNetPlan, record
from cdvideo.models.architectures import tokenizer_dir
from cdvideo.math.losses import contrast_caption_loss, min_snr_weight, signal_to_noise
from cdvideo.models.text import tokenize
from cdvideo.toyworld.world import caption, describe


def object_weights(alpha: torch.Tensor, weight: float, factor: int) -> torch.Tensor:
    """(B, H, W) object coverage in [0, 1] -> (B, 1, H / factor, W / factor) loss weights, 1 on the background and
    `weight` where an object covers the latent pixel."""
    cover = torch.nn.functional.avg_pool2d(alpha[:, None], factor)
    return 1 + (weight - 1) * cover


def sample_errors(pred: torch.Tensor, noise: torch.Tensor, pixel_w: torch.Tensor) -> torch.Tensor:
    """(B,) pixel-weighted (B, 1, h, w) squared epsilon error per sample."""
    return (pixel_w * (pred - noise).pow(2)).mean(dim=(1, 2, 3))


def epsilon_loss(pred: torch.Tensor, noise: torch.Tensor, snr_w: torch.Tensor, pixel_w: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of the min-SNR-weighted (B,), pixel-weighted (B, 1, h, w) squared epsilon error."""
    return (snr_w * sample_errors(pred, noise, pixel_w)).mean()


def noised(x0: torch.Tensor, sched, gen: torch.Generator, min_snr: float, t_min: int = 0) -> dict:
    """Noise and timesteps (t_min and up) drawn from `gen`, the noised latents and their min-SNR weights (epsilon
    targets)."""
    noise = torch.randn(x0.shape, generator=gen)
    t = torch.randint(t_min, sched.config.num_train_timesteps, (len(x0),), generator=gen)
    return dict(noisy=sched.add_noise(x0, noise, t), noise=noise, t=t,
                w=min_snr_weight(signal_to_noise(sched.alphas_cumprod, t), min_snr, "epsilon"))


def load_text(work: Path):
    text_encoder = CLIPTextModel.from_pretrained(str(work / "text_encoder")).eval().requires_grad_(False)
    return CLIPTokenizer.from_pretrained(str(tokenizer_dir())), text_encoder


def latents(work: Path, kind: str) -> tuple[np.ndarray, np.ndarray]:
    return (np.load(work / f"latents_{kind}_mean.npy", mmap_mode="r"),
            np.load(work / f"latents_{kind}_std.npy", mmap_mode="r"))


def sample_latents(mean: np.ndarray, std: np.ndarray, scale: float, gen: torch.Generator) -> torch.Tensor:
    m, s = torch.from_numpy(np.array(mean)).float(), torch.from_numpy(np.array(std)).float()
    return (m + s * torch.randn(m.shape, generator=gen)) * scale


def captions(scenes: list, rng: np.random.Generator, drop: float, pattern_alone: float = 0.0) -> list[str]:
    """A caption per scene, "" for a share `drop` of them (classifier-free guidance); `pattern_alone`: see
    `world.describe`."""
    return ["" if rng.random() < drop else caption(s, rng, pattern_alone=pattern_alone) for s in scenes]


def captions_with_contrasts(scenes: list, rng: np.random.Generator, drop: float,
                            pattern_alone: float = 0.0) -> tuple[list[str], list[str | None]]:
    """`captions` (the same draws) and each caption's binding contrast: the same words with the body's and the
    pattern's colours exchanged ("a yellow ball with purple stripes" -> "a purple ball with yellow stripes"), None
    where the caption does not name two different colours."""
    texts, contrasts = [], []
    for s in scenes:
        before = rng.bit_generator.state
        if rng.random() < drop:
            texts.append(""), contrasts.append(None)
            continue
        text, named = describe(s, rng, pattern_alone=pattern_alone)
        texts.append(text)
        if not (named["colour"] and named["pattern_colour"]) or s.colour == s.pattern_colour:
            contrasts.append(None)
            continue
        after, rng.bit_generator.state = rng.bit_generator.state, before
        rng.random()  # the drop's draw again, then the caption's draws on the swapped scene
        contrasts.append(describe(s.colours_swapped(), rng, pattern_alone=pattern_alone)[0])
        rng.bit_generator.state = after
    return texts, contrasts


def still_indices(rng: np.random.Generator, n: int, k: int, split: tuple[np.ndarray, np.ndarray] | None = None,
                  share: float | None = None) -> np.ndarray:
    """k distinct stills of n, sorted; with `split` (the patterned and the plain stills' indices) a share `share` of
    them patterned (a UNet trial's data mix; None: a uniform draw, the build's)."""
    if split is None:
        return np.sort(rng.choice(n, k, replace=False))
    patterned, plain = split
    k_pat = int(rng.binomial(k, share))
    return np.sort(np.concatenate([rng.choice(patterned, k_pat, replace=False),
                                   rng.choice(plain, k - k_pat, replace=False)]))


class EMA:
    """Exponential moving average of the weights, with the usual warm-up of the decay."""

    def __init__(self, model: torch.nn.Module, decay: float):
        self.model, self.decay, self.step = copy.deepcopy(model).eval().requires_grad_(False), decay, 0

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        self.step += 1
        d = min(self.decay, (1 + self.step) / (10 + self.step))
        torch._foreach_lerp_(list(self.model.parameters()), [p.detach() for p in model.parameters()], 1 - d)


def batch_at(step: int, seed: int, data: dict, plan: UNetPlan, tokenizer, object_weight: float = 1.0) -> dict:
    """The step's batch, a pure function of (seed, step): stills and clip frames, noised, with token ids and the
    loss's pixel weights (CPU)."""
    rng, gen = step_rngs(seed, step)
    scenes, clip_scenes, (im_mean, im_std), (cl_mean, cl_std) = data["scenes"], data["clip_scenes"], *data["latents"]
    im_alpha, cl_alpha = data["alpha"]
    batch = plan.batch
    n_clip = batch // plan.clip_divisor  # a quarter of each batch are clip frames
    ii = still_indices(rng, len(scenes), batch - n_clip, data.get("pattern_split"), data.get("pattern_share"))
    ci, fi = rng.integers(len(clip_scenes), size=n_clip), rng.integers(cl_mean.shape[1], size=n_clip)
    mean = np.concatenate([im_mean[ii], np.stack([cl_mean[c, f] for c, f in zip(ci, fi)])])
    std = np.concatenate([im_std[ii], np.stack([cl_std[c, f] for c, f in zip(ci, fi)])])
    x0 = sample_latents(mean, std, data["scale"], gen)  # (B, 4, 16, 16)
    batch_scenes = [scenes[i] for i in ii] + [clip_scenes[c] for c in ci]
    if data.get("contrast"):  # a contrast round: each two-colour caption's colour-swapped contrast too
        texts, contrasts = captions_with_contrasts(batch_scenes, rng, plan.caption_drop, data.get("pattern_alone", 0.0))
        rows = [k for k, c in enumerate(contrasts) if c]
        extra = dict(contrast_rows=torch.tensor(rows, dtype=torch.long),
                     contrast_ids=tokenize(tokenizer, [contrasts[k] for k in rows])) if rows else {}  # (N, 77)
    else:
        texts, extra = captions(batch_scenes, rng, plan.caption_drop, data.get("pattern_alone", 0.0)), {}
    ids = tokenize(tokenizer, texts)  # (B, 77)
    alpha = np.concatenate([im_alpha[ii], np.stack([cl_alpha[c, f] for c, f in zip(ci, fi)])])
    alpha = torch.from_numpy(alpha).float() / 255  # (B, 64, 64) object coverage
    pixel_w = object_weights(alpha, object_weight, alpha.shape[-1] // x0.shape[-1])  # (B, 1, 16, 16)
    return dict(noised(x0, data["sched"], gen, plan.min_snr), ids=ids, alpha=alpha, pixel_w=pixel_w, **extra)


def training_data(work: Path, seed: int, plan: UNetPlan) -> dict:
    """What `batch_at` draws from: the pretraining scenes, their latents and object coverage (memory-mapped), the
    VAE's scaling factor and SD1.5's DDPM schedule (the UNet and ControlNet stages)."""
    from diffusers import AutoencoderKL, DDPMScheduler  # lazy: start-up time

    _, scenes, _, clip_scenes = pretraining(work, seed, plan.renders)
    return dict(scenes=scenes, clip_scenes=clip_scenes, latents=(latents(work, "images"), latents(work, "clips")),
                alpha=tuple(np.load(work / f"{k}_alpha.npy", mmap_mode="r") for k in ("images", "clips")),
                scale=AutoencoderKL.load_config(str(work / "vae"))["scaling_factor"],
                sched=DDPMScheduler(**SD_SCHEDULE))


def run(work: Path, seed: int, plan: UNetPlan) -> dict:
    seed_everything(seed)
    device, rounds = plan.device, [int(r[0]) for r in plan.rounds]
    done, ema_step, curve = resume_round(work, seed, plan)
    unet = build(work / "unet.round" if done else None, plan.widths)
    unet = unet.train().to(device, memory_format=torch.channels_last)
    ema = EMA(unet, plan.ema_decay)
    ema.step, t0 = ema_step, time.time()
    log(f"unet: {sum(p.numel() for p in unet.parameters()) / 1e6:.2f}M parameters")
    if done < len(rounds):  # the renders and their latents only when a round is left to train
        data = training_data(work, seed, plan)
        tokenizer, text_encoder = load_text(work)
        text_encoder.to(device)
    for k in range(done, len(rounds)):
        train_round(unet, ema, data, text_encoder, tokenizer, curve, (seed, plan, work), sum(rounds[:k]),
                    plan.rounds[k])
        save_round(work, ema, seed, plan, k + 1, curve)
        unet.load_state_dict(ema.model.state_dict())  # the next round starts from the average (a warm restart)
    curve.save()
    ema.model.cpu().save_pretrained(str(work / "unet"))
    info = {"seconds": round(time.time() - t0), "went_on_after_rounds": done}
    mark_done(work, "unet", info, plan)
    return info


def build(saved: Path | None = None, widths: tuple[int, ...] = UNetPlan.widths, heads: int | None = None):
    """A fresh UNet of the world's architecture with these block widths (and `heads` attention heads instead of
    the world's, for a trial), or a saved round's (its EMA weights)."""
    from diffusers import UNet2DConditionModel  # lazy: start-up time

    if saved:
        return UNet2DConditionModel.from_pretrained(str(saved))
    return UNet2DConditionModel(**{**UNET, "attention_head_dim": heads or UNET["attention_head_dim"]},
                                block_out_channels=tuple(widths))


def train_round(unet, ema: EMA, data: dict, text_encoder, tokenizer, curve: Curve, run: tuple, r0: int,
                this_round: tuple) -> None:
    """Steps r0 .. r0 + n of the run (seed, plan, work), this_round = (n, object weight[, Finish]): a fresh AdamW
    and warm-up cosine over the round (a Finish's own, and its contrast captions); a step checkpoint every
    plan.checkpoint_every steps, for a stop inside the round (never committed)."""
    (seed, plan, work), (n, object_weight, *finish) = run, this_round
    if finish:
        data = {**data, "contrast": finish[0].contrast}
    device, steps, optim = plan.device, r0 + n, finish[0].optim if finish else plan.optim
    opt, lr_sched = optimizer(unet.parameters(), optim, n)
    state = dict(unet=unet, ema=ema.model, opt=opt, lr_sched=lr_sched)
    start, ema.step = resume(work / "unet.ckpt", state, curve, r0, ema.step, round_plan(seed, plan))
    t0 = time.time()
    with ThreadPoolExecutor(1) as pool:  # the next batch is drawn while this one trains
        pending = pool.submit(batch_at, start, seed, data, plan, tokenizer, object_weight)
        for step in range(start, steps):
            b = {k: v.to(device) for k, v in pending.result().items()}
            if step + 1 < steps:
                pending = pool.submit(batch_at, step + 1, seed, data, plan, tokenizer, object_weight)
            with torch.no_grad():
                cond = text_encoder(b["ids"]).last_hidden_state  # (B, 77, D)
            # -- prediction, min-SNR- and object-weighted epsilon loss, update, EMA
            pred = unet(b["noisy"].contiguous(memory_format=torch.channels_last), b["t"], cond).sample  # (B, 4, h, w)
            loss = epsilon_loss(pred, b["noise"], b["w"], b["pixel_w"])
            if "contrast_ids" in b:  # a contrast round: the caption must explain the latents better than its contrast
                bind, acc = contrast_term(unet, text_encoder, b, pred, data["contrast"])
                loss = loss + data["contrast"][0] * bind
            optimizer_step(loss, opt, lr_sched, unet.parameters(), optim.max_norm)
            ema.update(unet)
            if step % 25 == 0 or step == steps - 1:
                extra = dict(contrast=bind.item(), contrast_accuracy=acc.item()) if "contrast_ids" in b else {}
                curve.add(step, loss=loss.item(), **extra)
                total = sum(r[0] for r in plan.rounds)
                shown = (f" contrast {extra['contrast']:.3f} (own caption better {extra['contrast_accuracy']:.2f})"
                         if extra else "")
                log(f"unet step {step}/{total} loss {loss.item():.4f}{shown} ({time.time() - t0:.0f} s)")
            if (step + 1) % plan.checkpoint_every == 0 and step + 1 < steps:
                checkpoint(work / "unet.ckpt", step + 1, state, curve, ema.step, round_plan(seed, plan))
    (work / "unet.ckpt").unlink(missing_ok=True)


def contrast_term(unet, text_encoder, b: dict, pred: torch.Tensor, weights: tuple[float, float]) -> tuple:
    """The contrast captions' loss on the batch's rows that have one (`weights` = (weight, beta)), and the share of
    those rows whose own caption explains them better."""
    rows = b["contrast_rows"]
    with torch.no_grad():
        cond = text_encoder(b["contrast_ids"]).last_hidden_state  # (N, 77, D)
    noisy = b["noisy"][rows].contiguous(memory_format=torch.channels_last)
    pred_c = unet(noisy, b["t"][rows], cond).sample  # (N, 4, h, w)
    err = sample_errors(pred[rows], b["noise"][rows], b["pixel_w"][rows])
    err_c = sample_errors(pred_c, b["noise"][rows], b["pixel_w"][rows])
    return contrast_caption_loss(err, err_c, weights[1]), (err_c > err).float().mean().detach()  # read when logged


def save_round(work: Path, ema: EMA, seed: int, plan: UNetPlan, done: int, curve: Curve) -> None:
    """The EMA weights after `done` rounds, with the plan and curve so far, in work/unet.round/."""
    blob = {"plan": round_plan(seed, plan), "rounds": record(plan)["rounds"][:done], "ema_step": ema.step,
            "curve": curve.values}
    common.save_round(work, "unet", ema.model.save_pretrained, blob)


def resume_round(work: Path, seed: int, plan: UNetPlan) -> tuple[int, int, Curve]:
    """How many of the plan's rounds work/unet.round has done (0 unless its plan is this one and its rounds begin
    the plan's), its EMA step and the curve up to there."""
    curve, blob = Curve(work, "unet"), common.saved_round(work, "unet", seed, plan)
    if blob is None:
        return 0, 0, curve
    curve.values = blob["curve"]
    return len(blob["rounds"]), blob["ema_step"], curve


def checkpoint(path: Path, step: int, state: dict, curve, ema_step: int, plan: dict) -> None:
    """Everything the loop needs to continue bitwise where it stopped (batches are functions of the step), and the
    plan it belongs to."""
    blob = {k: v.state_dict() for k, v in state.items()}
    blob.update(step=step, ema_step=ema_step, curve=curve.values, plan=plan)
    torch.save(blob, path.with_suffix(".tmp"))
    path.with_suffix(".tmp").replace(path)


def resume(path: Path, state: dict, curve, r0: int, ema_step: int, plan: dict) -> tuple[int, int]:
    """Load a step checkpoint of this plan left inside this round (from r0); returns the step and EMA step to go on
    from."""
    if not path.is_file():
        return r0, ema_step
    blob = torch.load(path, weights_only=False, map_location="cpu")
    if blob["step"] <= r0 or blob.get("plan") != plan:
        return r0, ema_step
    for k, v in state.items():
        v.load_state_dict(blob[k])
    curve.values = blob["curve"]
    log(f"unet: resumed at step {blob['step']} from {path}")
    return blob["step"], blob["ema_step"]
