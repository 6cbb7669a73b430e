"""The latent pool: encoded once, drawn with the augmentation's distribution."""

import numpy as np
import pytest
import torch
from conftest import tiny_overrides

from cdvideo.data.config import load_train_config
from cdvideo.data.photos import Concept, augment, load_folder
from cdvideo.models import architectures as tiny
from cdvideo.tasks.latents import LatentPool, pool_size


def test_pool_sizes():
    assert pool_size("auto", 5, draws=10_000, augmented=True, flip=True) == 320  # 64 per photo
    assert pool_size("auto", 5, draws=40, augmented=True, flip=True) == 40  # never more than the run draws
    assert pool_size(12, 5, draws=40, augmented=True, flip=True) == 12
    assert pool_size("auto", 5, draws=40, augmented=False, flip=True) == 10  # every photo and its mirror


def test_pool_draws_follow_the_augmentation_distribution(tmp_path, dog_dir):
    """Mask areas and prompt prefixes drawn from the pool match those of augmenting every step."""
    cfg = load_train_config(None, tiny_overrides(tmp_path, dog_dir, "max_steps=10000", "latent_pool=auto"))
    images = load_folder(dog_dir)
    concept = Concept("sks", "dog", images, "photo of a sks dog")
    vae = tiny.build_components()["vae"]
    pool = LatentPool([concept], cfg, 8, vae, torch.device("cpu"), torch.float32, np.random.default_rng(0))
    assert pool.sizes == [64 * len(images)]

    rng_a, rng_b, n = np.random.default_rng(1), np.random.default_rng(2), 3000
    live = [augment(images[int(rng_a.integers(len(images)))], 64, 8, rng_a) for _ in range(n)]
    drawn = [pool.batch([concept], 1, s, rng_b) for s in range(n)]
    live_area = np.array([m.mean() for _, m, _ in live])
    pool_area = np.array([float(b["mask"].mean()) for b in drawn])
    assert abs(live_area.mean() - pool_area.mean()) < 0.04
    assert np.quantile(pool_area, [0.25, 0.5, 0.75]) == pytest.approx(np.quantile(live_area, [0.25, 0.5, 0.75]),
                                                                      abs=0.08)
    for prefix in ("", "a far away ", "very small ", "zoomed in ", "close up "):
        live_p = np.mean([p == prefix for _, _, p in live])
        pool_p = np.mean([b["prompts"][0] == prefix + "photo of a sks dog" for b in drawn])
        assert abs(live_p - pool_p) < 0.08, prefix
