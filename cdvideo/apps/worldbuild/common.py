"""Shared pieces of the miniature world's build: seeding, rendered datasets, optimizers, curves, stage records,
and the architectures of the miniature model (SD1.5's component classes and block types, small widths)."""

from __future__ import annotations

import hashlib
import json
import math
import multiprocessing
import os
import random
import time
from pathlib import Path

import numpy as np
import torch

from cdvideo.apps.worldbuild.plans import Optim, Renders, record
from cdvideo.data.files import atomic_folder, atomic_path, write_text_atomic
from cdvideo.toyworld import MODEL_ID, draw, model_dir, world
from cdvideo.toyworld.instances import excluded

TEXT_WIDTH = 64
# SD1.5's block layout (cross-attention in the middle levels and the mid block) without attention at the
# 16 x 16 level, where self-attention over 256 positions would cost 40% of a CPU step (the second edition
# measured attention in the decoder's 16 x 16 level: 1.39x a step, no better at equal steps; docs/toyworld.md).
# Its widths are the plan's (UNetPlan.widths); the motion adapter's follow the UNet it trains over.
UNET = dict(layers_per_block=1, sample_size=16, in_channels=4, out_channels=4,
            cross_attention_dim=TEXT_WIDTH, attention_head_dim=2, norm_num_groups=8,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"))


# second edition: twice the first's widths at 64 and 32 px, where a pattern's colour is kept or lost
VAE = dict(block_out_channels=(32, 64, 64), layers_per_block=1, in_channels=3, out_channels=3, latent_channels=4,
           down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3,
           norm_num_groups=8, sample_size=64, mid_block_add_attention=False)
TEXT = dict(hidden_size=TEXT_WIDTH, intermediate_size=4 * TEXT_WIDTH, num_hidden_layers=3, num_attention_heads=4,
            max_position_embeddings=77, projection_dim=TEXT_WIDTH, hidden_act="quick_gelu",
            bos_token_id=0, eos_token_id=2, pad_token_id=1)  # SD1.5's config values, eos_token_id=2 included
ADAPTER = dict(motion_layers_per_block=1, motion_mid_block_layers_per_block=1, motion_num_attention_heads=2,
               motion_norm_num_groups=8, motion_max_seq_length=32, use_motion_mid_block=True)
# DDPM schedule of SD1.5 (image model) and of AnimateDiff's motion training (linear betas)
SD_SCHEDULE = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                   clip_sample=False, steps_offset=1)
MOTION_SCHEDULE = {**SD_SCHEDULE, "beta_schedule": "linear"}


def warmup_cosine(optimizer, steps: int, warmup: int, floor: float = 0.0):
    """Linear warm-up, then cosine decay to `floor` x the learning rate."""
    def factor(s: int) -> float:
        return min(1.0, (s + 1) / warmup) * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * s / steps)))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def optimizer(params, optim: Optim, steps: int | None):
    """AdamW of the plan, and its warm-up cosine schedule over `steps` (None: a constant learning rate)."""
    opt = torch.optim.AdamW(params, lr=optim.lr, weight_decay=optim.weight_decay)
    return opt, None if steps is None else warmup_cosine(opt, steps, optim.warmup, optim.floor)


def seed_everything(seed: int) -> None:
    """Python, numpy and torch RNGs; deterministic kernels (the build is repeatable for a seed and thread count)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)


def step_rngs(seed: int, step: int) -> tuple[np.random.Generator, torch.Generator]:
    """The numpy and torch generators of one training step: a batch is a pure function of (seed, step)."""
    return np.random.default_rng([seed, step]), torch.Generator().manual_seed(seed * 1_000_003 + step)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# -- Rendered datasets ------------------------------------------------------------------------------------
def _render_chunk(scenes: list) -> tuple[np.ndarray, np.ndarray]:
    pairs = [draw.render_with_alpha(s) for s in scenes]
    return np.stack([p[0] for p in pairs]), np.stack([(p[1] * 255).round().astype(np.uint8) for p in pairs])


def two_coloured_scene(rng: np.random.Generator, exclude: frozenset = frozenset(), **mix: float) -> world.Scene:
    """A random moving clip of a patterned object whose colours, swapped, still stand out from its background."""
    while True:
        scene = world.sample_scene(rng, clip=True, exclude=exclude, **mix)
        if (scene.pattern_colour is not None and scene.motion not in ("still", "spinning")
                and not world.clashes(scene.pattern_colour, scene.background)):
            return scene


def spinning_scene(rng: np.random.Generator, exclude: frozenset = frozenset(), **mix: float) -> world.Scene:
    """A random clip whose object spins (`mix`: sample_scene's accessory and companion shares)."""
    while True:
        scene = world.sample_scene(rng, exclude=exclude, **mix)
        if world.can_spin(scene.cls, scene.pattern):
            return world.with_motion(scene, rng, "spinning")


def render_set(work: Path, renders: Renders, seed: int) -> tuple[np.ndarray, list]:
    """The scenes of `renders` drawn with seed + its offset, rendered on all cores; cached in work/<name>.npy +
    .json (+ <name>_alpha.npy: where the objects are)."""
    name, n, clip = renders.name, renders.n, renders.clip
    seed, exclude = seed + renders.seed_offset, renders.exclude
    arrays, labels = work / f"{name}.npy", work / f"{name}.json"
    if arrays.is_file() and labels.is_file() and (work / f"{name}_alpha.npy").is_file():
        scenes = [world.Scene(**d) for d in json.loads(labels.read_text())]
        if len(scenes) == n:
            return np.load(arrays, mmap_mode="r"), scenes
    rng = np.random.default_rng(seed)
    ex = excluded() if exclude else frozenset()
    mix = dict(accessory_p=renders.accessory_p, companion_p=renders.companion_p)
    if clip == "spinning":
        scenes = [spinning_scene(rng, ex, **mix) for _ in range(n)]
    elif clip == "twins":  # n // 2 two-coloured moving clips, each followed by its colours swapped
        scenes = [t for s in (two_coloured_scene(rng, ex, **mix) for _ in range(n // 2))
                  for t in (s, s.colours_swapped())]
    else:  # a sweep's name ("short", "middle"): the clips that clip=True draws, along that sweep
        scenes = [world.sample_scene(rng, clip=bool(clip), exclude=ex, **mix) for _ in range(n)]
        scenes = [world.with_sweep(s, clip) for s in scenes] if isinstance(clip, str) else scenes
    chunks = [scenes[i:i + 500] for i in range(0, n, 500)]
    t0 = time.time()
    with multiprocessing.get_context("fork").Pool(os.cpu_count()) as pool:
        parts = pool.map(_render_chunk, chunks)
    data, alpha = np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
    log(f"rendered {name}: {n} {'clips' if clip else 'images'} in {time.time() - t0:.0f} s")
    work.mkdir(parents=True, exist_ok=True)
    save_array(arrays, data if clip else data[:, 0])
    save_array(work / f"{name}_alpha.npy", alpha if clip else alpha[:, 0])  # object coverage, uint8
    write_text_atomic(labels, json.dumps([s.labels() for s in scenes]))
    return np.load(arrays, mmap_mode="r"), scenes


def save_array(path: Path, array: np.ndarray) -> None:
    """`np.save` under a temporary name, renamed when whole: a full disk leaves no partial array."""
    with atomic_path(path) as tmp:
        np.save(tmp, array)


def to_pixels(batch: np.ndarray) -> torch.Tensor:
    """uint8 (B, H, W, 3) -> float (B, 3, H, W) in [-1, 1]."""
    return torch.from_numpy(np.array(batch)).permute(0, 3, 1, 2).float() / 127.5 - 1.0


def from_pixels(images: torch.Tensor) -> np.ndarray:
    """float (B, 3, H, W) in [-1, 1] (clamped) -> uint8 (B, H, W, 3): to_pixels' inverse."""
    return ((images.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()


# -- Curves -----------------------------------------------------------------------------------------------
def optimizer_step(loss, opt, sched=None, clip_params=None, max_norm: float | None = 1.0) -> None:
    """One update: backward, gradient-norm clipping when params and a max norm are given, optimizer and schedule
    step."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if clip_params is not None and max_norm is not None:
        torch.nn.utils.clip_grad_norm_(clip_params, max_norm)
    opt.step()
    if sched is not None:
        sched.step()


class Curve:
    """Loss values per step, written to work/curves/<name>.json for the training-curve figure."""

    def __init__(self, work: Path, name: str):
        self.path, self.values = work / "curves" / f"{name}.json", []

    def add(self, step: int, **values: float) -> None:
        self.values.append({"step": step, **{k: round(float(v), 5) for k, v in values.items()}})

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps(self.values))


def done(work: Path, stage: str) -> bool:
    return (work / f"{stage}.done").is_file()


def mark_done(work: Path, stage: str, info: dict, plan) -> None:
    """The stage's record: what it measured and the plan it ran."""
    write_text_atomic(work / f"{stage}.done", json.dumps({**info, "plan": record(plan)}, indent=1))


def unet_digest(work: Path) -> str | None:
    """The trained UNet's weights (work/unet) as a short SHA-256: what the motion and ControlNet stages, trained
    over the frozen UNet, record, so that weights trained over another UNet are not taken for this one's."""
    weights = work / "unet" / "diffusion_pytorch_model.safetensors"
    return hashlib.sha256(weights.read_bytes()).hexdigest()[:16] if weights.is_file() else None


def base_digest(model: str = MODEL_ID) -> str:
    """The UNet a study's runs train on (the miniature model's, or a local diffusers folder's) as a short SHA-256; a
    hub id's name hashed alike (a file name, whatever its slashes)."""
    folder = model_dir() if model == MODEL_ID else Path(model)
    return unet_digest(folder) or hashlib.sha256(model.encode()).hexdigest()[:16]


def study_run(out: Path, config, model: str = MODEL_ID) -> Path:
    """A study's run as `cdvideo train` reads `config()`, cached in `out`: its weights are reused only where they were
    trained on the UNet `model` has now (out/base.txt holds that UNet's digest), else trained again, so that a study
    measured again after the UNet changed does not read K/V deltas trained on the one before."""
    from cdvideo.tasks.train import train  # lazy: start-up time

    weights, base, digest = out / "weights.safetensors", out / "base.txt", base_digest(model)
    if weights.is_file() and base.is_file() and base.read_text().strip() == digest:
        return weights
    path = train(config())
    write_text_atomic(base, digest + "\n")
    return path


def round_plan(seed: int, plan, over_unet: str | None = None) -> dict:
    """What a saved round (UNet or motion stage) must share with a run to go on from it: the seed and the plan but
    its rounds, as JSON values (tuples as lists), and the UNet it trains over (the motion stage's)."""
    blob = {"seed": seed, **{k: v for k, v in record(plan).items() if k != "rounds"}}
    return json.loads(json.dumps(blob | ({"unet": over_unet} if over_unet else {})))


def save_round(work: Path, stage: str, write_weights, blob: dict) -> None:
    """A finished round of a stage trained in rounds (UNet, motion), which a build may commit and go on from in a
    later sitting: work/<stage>.round/ with the weights `write_weights(folder)` writes and round.json (`blob`: the
    plan, the rounds done, the curve so far), written whole, then renamed."""
    with atomic_folder(work / f"{stage}.round") as tmp:
        write_weights(str(tmp))
        (Path(tmp) / "round.json").write_text(json.dumps(blob))
    log(f"{stage}: saved after rounds {blob['rounds']}")


def saved_round(work: Path, stage: str, seed: int, plan, over_unet: str | None = None) -> dict | None:
    """The record of work/<stage>.round when it was made with this seed and plan (over this UNet) and its rounds
    begin the plan's; None (start over) otherwise."""
    saved = work / f"{stage}.round" / "round.json"
    if not saved.is_file():
        return None
    blob = json.loads(saved.read_text())
    done, wanted = blob["rounds"], json.loads(json.dumps(record(plan)["rounds"]))  # tuples as JSON lists
    if blob["plan"] != round_plan(seed, plan, over_unet) or done != wanted[:len(done)]:
        log(f"{stage}: the saved rounds {done} were made with another plan than {wanted}, or over another UNet; "
            "starting over")
        return None
    log(f"{stage}: going on after rounds {done} ({saved.parent})")
    return blob


def pretraining(work: Path, seed: int, renders: tuple[Renders, ...]):
    """The pretraining renders: stills and clips (personal instances excluded), shared by the later stages."""
    (images, scenes), (clips, clip_scenes) = (render_set(work, r, seed) for r in renders)
    return images, scenes, clips, clip_scenes
