"""Stage 3: the VAE, an AutoencoderKL with 4x downsampling (64 px images, 16 x 16 x 4 latents) and no attention
(fully convolutional), trained on 32 px crops of the pretraining renders (4x cheaper than whole frames, and a
convolutional autoencoder only sees local context) with L1 + MSE, 5x heavier on object pixels than on the
incompressible noise textures, and SD's tiny KL weight. The posterior's
log-variance starts at -6, so latents are nearly deterministic from the start. Then every render is encoded once
for the UNet and motion stages, and the latent scaling factor set to 1 / std, as SD1.5's 0.18215 was."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from cdvideo.apps.worldbuild.common import (VAE, Curve, log, mark_done, optimizer, optimizer_step, pretraining,
    save_array, seed_everything, to_pixels)
from cdvideo.apps.worldbuild.plans import VAEPlan


def build(plan: VAEPlan):
    from diffusers import AutoencoderKL  # lazy: start-up time

    vae = AutoencoderKL(**VAE)
    with torch.no_grad():
        vae.quant_conv.bias[VAE["latent_channels"]:] = plan.logvar_init  # the log-variance half of the moments
    return vae


def crops(arrays: list[np.ndarray], rng: np.random.Generator, size: int) -> list[np.ndarray]:
    """The same random crop of each frame in every array, at offsets that keep the latent grid aligned (x4)."""
    off = rng.integers(0, (arrays[0].shape[1] - size) // 4 + 1, size=(len(arrays[0]), 2)) * 4
    return [np.stack([f[y:y + size, x:x + size] for f, (y, x) in zip(a, off)]) for a in arrays]


def frames_of(images: np.ndarray, clips: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Index into stills then clip frames as one sequence of 64 px frames (or their alpha maps)."""
    n, f = len(images), clips.shape[1]
    return np.stack([images[i] if i < n else clips[(i - n) // f, (i - n) % f] for i in idx])


def run(work: Path, seed: int, plan: VAEPlan) -> dict:
    seed_everything(seed)
    images, _, clips, _ = pretraining(work, seed, plan.renders)
    alpha_i = np.load(work / "images_alpha.npy", mmap_mode="r")
    alpha_c = np.load(work / "clips_alpha.npy", mmap_mode="r")
    total = len(images) + clips.shape[0] * clips.shape[1]
    vae = build(plan).train().to(memory_format=torch.channels_last)
    steps, batch = plan.steps, plan.batch
    opt, sched = optimizer(vae.parameters(), plan.optim, steps)
    rng, gen = np.random.default_rng(seed), torch.Generator().manual_seed(seed)
    curve, t0 = Curve(work, "vae"), time.time()
    for step in range(steps):
        idx = rng.choice(total, batch, replace=False)
        px, alpha = crops([frames_of(images, clips, idx), frames_of(alpha_i, alpha_c, idx)], rng, plan.crop)
        x, w = to_pixels(px), 1 + plan.object_weight * torch.from_numpy(alpha).float()[:, None] / 255
        post = vae.encode(x.contiguous(memory_format=torch.channels_last)).latent_dist
        rec = vae.decode(post.sample(gen)).sample
        l1, mse = ((rec - x).abs() * w).mean() / w.mean(), ((rec - x).pow(2) * w).mean() / w.mean()
        kl = post.kl().mean()
        loss = l1 + mse + plan.kl_weight * kl
        optimizer_step(loss, opt, sched, vae.parameters(), plan.optim.max_norm)
        if step % 50 == 0 or step == steps - 1:
            curve.add(step, l1=l1.item(), mse=mse.item(), kl=kl.item())
            log(f"vae step {step}/{steps} l1 {l1.item():.4f} mse {mse.item():.5f} kl {kl.item():.0f} "
                f"({time.time() - t0:.0f} s)")
    curve.save()
    vae = vae.eval()
    stats = encode_all(vae, images, clips, work, batch=plan.encode_batch)
    vae = vae.to(memory_format=torch.contiguous_format)
    vae.register_to_config(scaling_factor=stats["scaling_factor"])
    vae.save_pretrained(str(work / "vae"))
    info = {"steps": steps, "seconds": round(time.time() - t0), "final_l1": l1.item(), **stats}
    mark_done(work, "vae", info, plan)
    return info


@torch.no_grad()
def encode_all(vae, images: np.ndarray, clips: np.ndarray, work: Path, device: str = "cpu", batch: int = 256
               ) -> dict:
    """Latent means and stds (float16) of every still and clip frame, and the scaling factor 1 / std(latents)."""
    vae = vae.to(device)
    t0 = time.time()
    mean, std = encode(vae, images, device, batch)
    save_array(work / "latents_images_mean.npy", mean)
    save_array(work / "latents_images_std.npy", std)
    encode_clips(vae, clips, work, "clips", device, batch)
    scale = 1.0 / float(mean.astype(np.float32).std())
    log(f"encoded {len(mean)} images and {clips.shape[0] * clips.shape[1]} clip frames in {time.time() - t0:.0f} s; "
        f"scaling factor {scale:.4f}, posterior std {float(std.astype(np.float32).mean()):.4f}")
    return {"scaling_factor": round(scale, 5)}


@torch.no_grad()
def encode(vae, frames: np.ndarray, device: str = "cpu", batch: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Latent means and stds (float16, (N, 4, h, w)) of uint8 frames (N, H, W, 3)."""
    means, stds = [], []
    for i in range(0, len(frames), batch):
        x = to_pixels(frames[i:i + batch]).to(device).contiguous(memory_format=torch.channels_last)
        d = vae.encode(x).latent_dist
        means.append(d.mean.half().cpu().numpy())
        stds.append(d.std.half().cpu().numpy())
    return np.concatenate(means), np.concatenate(stds)


def encode_clips(vae, clips: np.ndarray, work: Path, kind: str, device: str = "cpu", batch: int = 256) -> None:
    """Every frame of clips (N, F, H, W, 3) encoded, in work/latents_<kind>_{mean,std}.npy (N, F, 4, h, w)."""
    cm, cs = encode(vae, np.asarray(clips).reshape(-1, *clips.shape[2:]), device, batch)
    shape = (clips.shape[0], clips.shape[1], *cm.shape[1:])
    save_array(work / f"latents_{kind}_mean.npy", cm.reshape(shape))
    save_array(work / f"latents_{kind}_std.npy", cs.reshape(shape))


def reencode(work: Path, seed: int, plan: VAEPlan, device: str) -> dict:
    """Encode the renders again with the trained VAE (work/vae), e.g. on another machine that rendered them anew."""
    from diffusers import AutoencoderKL  # lazy: start-up time

    images, _, clips, _ = pretraining(work, seed, plan.renders)
    vae = AutoencoderKL.from_pretrained(str(work / "vae")).eval()
    stats = encode_all(vae, images, clips, work, device, plan.encode_batch)
    log(f"the VAE's recorded scaling factor stays {vae.config.scaling_factor:.5f}")
    return stats
