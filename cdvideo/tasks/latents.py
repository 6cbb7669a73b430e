"""VAE latents of the training photos, encoded once instead of every step.

Without augmentation there are only the photos and their mirror images: each is encoded once, and a step
draws exactly what it would have drawn before. With Custom Diffusion's scale augmentation a pool of augmented
variants is drawn up front from the run's seed (`latent_pool`: auto = 64 per photo, never more than the run
would draw) and encoded once; a step draws from the pool. Either way a drawn latent is the posterior mean plus
its standard deviation times fresh noise from the step's generator, as `latent_dist.sample` would give.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import ImageOps

from cdvideo.data.photos import Concept, augment, center_square, pixel_array, subject_weights

PER_PHOTO = 64


@dataclass
class Pooled:
    mean: torch.Tensor  # (V, 4, h, w) posterior means
    std: torch.Tensor  # (V, 4, h, w)
    mask: torch.Tensor  # (V, 1, h, w) loss weights: the augmentation's box, a subject mask's
    prefix: list[str]


def pool_size(setting, n_photos: int, draws: int, augmented: bool, flip: bool) -> int:
    """Variants to encode for one concept: every (photo, mirror) without augmentation; else the setting."""
    if not augmented:
        return n_photos * (2 if flip else 1)
    if setting == "auto":
        return max(1, min(PER_PHOTO * n_photos, draws))
    return int(setting)


@torch.no_grad()
def encode(vae, pixels: np.ndarray, device, dtype, batch: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """Posterior mean and std of (V, H, W, 3) pixels in [-1, 1], scaled by the VAE's scaling factor."""
    means, stds = [], []
    for i in range(0, len(pixels), batch):
        x = torch.from_numpy(pixels[i:i + batch]).permute(0, 3, 1, 2).to(device, dtype)
        d = vae.encode(x).latent_dist
        means.append(d.mean.float())
        stds.append(d.std.float())
    s = vae.config.scaling_factor
    return torch.cat(means) * s, torch.cat(stds) * s


def build_pool(c: Concept, size: int, res: int, factor: int, augmented: bool, flip: bool,
               rng: np.random.Generator, vae, device, dtype) -> Pooled:
    """Encode `size` variants of a concept's photos: all (photo, mirror) pairs, or augmented draws from `rng`."""
    pixels, masks, prefixes = [], [], []
    if not augmented:
        for image in c.images:
            for mirrored in ((False, True) if flip else (False,)):
                im = center_square(image)
                px, mask = subject_weights(pixel_array(ImageOps.mirror(im) if mirrored else im, res),
                                           np.ones((res // factor, res // factor), np.float32), factor,
                                           c.unmasked_weight)
                pixels.append(px)
                masks.append(mask)
                prefixes.append("")
    else:
        for _ in range(size):
            px, mask, prefix = augment(c.images[int(rng.integers(len(c.images)))], res, factor, rng, True, flip)
            px, mask = subject_weights(px, mask, factor, c.unmasked_weight)
            pixels.append(px)
            masks.append(mask)
            prefixes.append(prefix)
    mean, std = encode(vae, np.stack(pixels), device, dtype)
    return Pooled(mean, std, torch.from_numpy(np.stack(masks))[:, None].to(device), prefixes)


class LatentPool:
    """Per-concept pools of encoded variants; `batch` mirrors `data.sample_batch` with latents for pixels and
    draws from the step's RNG in the same order (without augmentation: the very same photos and mirrors)."""

    def __init__(self, concepts: list[Concept], cfg, factor: int, vae, device, dtype, seed_rng: np.random.Generator):
        draws = cfg.max_steps * cfg.batch_size * cfg.gradient_accumulation_steps // max(len(concepts), 1)
        self.pools = []
        for c in concepts:
            size = pool_size(cfg.latent_pool, len(c.images), draws, cfg.augment, cfg.flip)
            self.pools.append(build_pool(c, size, cfg.resolution, factor, cfg.augment, cfg.flip, seed_rng, vae,
                                         device, dtype))
        self.augmented, self.flip, self.res = cfg.augment, cfg.flip, cfg.resolution
        self.vae, self.device, self.dtype = vae, device, dtype
        self.class_latents: dict[tuple[int, int], tuple[torch.Tensor, torch.Tensor]] = {}

    @property
    def sizes(self) -> list[int]:
        return [len(p.prefix) for p in self.pools]

    def _class_latent(self, c: Concept, k: int, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        """A class image's posterior, encoded the first time it is drawn."""
        if (k, i) not in self.class_latents:
            mean, std = encode(self.vae, pixel_array(center_square(c.class_images[i]), self.res)[None], self.device,
                               self.dtype)
            self.class_latents[(k, i)] = (mean[0], std[0])
        return self.class_latents[(k, i)]

    def _pick(self, concepts: list[Concept], k: int, rng: np.random.Generator) -> int:
        if self.augmented:
            return int(rng.integers(len(self.pools[k].prefix)))
        photo = int(rng.integers(len(concepts[k].images)))  # then the mirror with p = 0.5, as `augment` draws
        return photo * 2 + int(rng.random() < 0.5) if self.flip else photo

    def batch(self, concepts: list[Concept], batch_size: int, step: int, rng: np.random.Generator) -> dict:
        """Posterior means and stds (B [+ B class images], 4, h, w), masks (B, 1, h, w) and prompts of one batch;
        `sample` turns them into latents with the step's generator."""
        means, stds, masks, prompts, cls_means, cls_stds, cls_prompts = [], [], [], [], [], [], []
        for i in range(batch_size):
            k = (step * batch_size + i) % len(concepts)
            pool, j = self.pools[k], self._pick(concepts, k, rng)
            means.append(pool.mean[j])
            stds.append(pool.std[j])
            masks.append(pool.mask[j])
            prompts.append(pool.prefix[j] + concepts[k].prompt)
            c = concepts[k]
            if c.class_images:
                mean, std = self._class_latent(c, k, int(rng.integers(len(c.class_images))))
                cls_means.append(mean)
                cls_stds.append(std)
                cls_prompts.append(c.class_prompt)
        batch = {"latent_mean": torch.stack(means + cls_means), "latent_std": torch.stack(stds + cls_stds),
                 "mask": torch.stack(masks), "prompts": prompts}
        if cls_prompts:
            batch["class_prompts"] = cls_prompts
        return batch


def sample(batch: dict, gen: torch.Generator) -> torch.Tensor:
    """Latents of a pooled batch: mean + std * noise, as `latent_dist.sample(gen)` draws them."""
    mean = batch["latent_mean"]
    return mean + batch["latent_std"] * torch.randn(mean.shape, generator=gen, device=mean.device)
