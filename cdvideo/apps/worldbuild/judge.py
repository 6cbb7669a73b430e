"""Stage 1: the judge, trained on fresh generator renders (every appearance, the instances' included), with blur,
noise and colour jitter so that it also reads generated images; scored on renders it never saw."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from cdvideo.apps.worldbuild.common import (Curve, log, mark_done, optimizer, optimizer_step, render_set,
    seed_everything, to_pixels)
from cdvideo.apps.worldbuild.plans import JudgePlan, Optim
from cdvideo.data.files import atomic_path
from cdvideo.toyworld import judge as J
from cdvideo.toyworld.draw import render
from cdvideo.toyworld.instances import INSTANCES
from cdvideo.toyworld.world import MOTIONS, NUM_FRAMES, POSITIONS, backgrounds_for


def all_targets(scenes: list, frames: int) -> tuple[dict, np.ndarray, np.ndarray]:
    """Stacked targets of every scene: heads (N, F), regression (N, F, 5), mask (N, F, 5)."""
    per = [J.targets(s, frames) for s in scenes]
    heads = {k: np.stack([p[0][k] for p in per]) for k in J.HEADS}  # every head: the judge picks its own
    return heads, np.stack([p[1] for p in per]), np.stack([p[2] for p in per])


def augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Blur half the batch (one sigma per step), add per-sample noise and brightness/contrast jitter."""
    b = len(x)
    sigma = 0.3 + 0.9 * torch.rand((), generator=gen).item()
    k = torch.arange(-2, 3, dtype=torch.float32)
    k = torch.exp(-k**2 / (2 * sigma**2))
    k = (k[:, None] * k[None]) / k.sum() ** 2
    blurred = F.conv2d(F.pad(x, (2, 2, 2, 2), mode="replicate"), k.expand(3, 1, 5, 5), groups=3)
    pick = (torch.rand(b, generator=gen) < 0.5).view(b, 1, 1, 1)
    x = torch.where(pick, blurred, x)
    scale = 0.9 + 0.2 * torch.rand(b, 1, 1, 1, generator=gen)
    shift = 0.1 * torch.rand(b, 1, 1, 1, generator=gen) - 0.05
    noise = 0.06 * torch.rand(b, 1, 1, 1, generator=gen) * torch.randn(x.shape, generator=gen)
    return (x * scale + shift + noise).clamp(-1, 1)


@torch.no_grad()
def evaluate(judge: J.Judge, images: np.ndarray, scenes: list, clips: np.ndarray, clip_scenes: list) -> dict:
    """Per-attribute accuracy on still renders, and motion accuracy on clips."""
    judge.eval()
    heads, _, _ = all_targets(scenes, 1)
    logits = {k: [] for k in judge.heads}
    for i in range(0, len(images), 500):
        out, _ = judge(to_pixels(images[i:i + 500]))
        for k in judge.heads:
            logits[k].append(out[k].argmax(-1))
    acc = {}
    for k in judge.heads:
        t = torch.from_numpy(heads[k][:, 0])
        valid = t != J.IGNORE
        acc[k] = float((torch.cat(logits[k])[valid] == t[valid]).double().mean())
    acc["motion"] = motion_accuracy(judge, clips, clip_scenes)
    judge.train()
    return acc


@torch.no_grad()
def motion_accuracy(judge: J.Judge, clips: np.ndarray, scenes: list) -> float:
    """The share of clips whose motion the judge reads right."""
    return float(np.mean([J.motion(J.read(judge, c)) == s.motion for c, s in zip(clips, scenes)]))


@torch.no_grad()
def instance_identity(judge: J.Judge, per_size: int = 16, seed: int = 0) -> dict[str, float]:
    """Identity the judge reads on each personal instance's own renders (big and small, random background and
    position): the most a generated image of it can score."""
    rng, out = np.random.default_rng(seed), {}
    for name, inst in INSTANCES.items():
        backgrounds = backgrounds_for(inst.colour)
        frames = [render(inst.scene(backgrounds[rng.integers(len(backgrounds))], list(POSITIONS)[rng.integers(5)],
                                    size, seed=int(rng.integers(2**31))))[0]
                  for size in ("big", "small") for _ in range(per_size)]
        out[name] = round(J.identity(J.read(judge, frames), inst.appearance), 4)
    return out


def run(work: Path, seed: int, plan: JudgePlan) -> dict:
    seed_everything(seed)
    (images, scenes), (clips, clip_scenes), (spins, spin_scenes) = (render_set(work, r, seed) for r in plan.renders)
    (test_images, test_scenes), (test_clips, test_clip_scenes) = (render_set(work, r, seed) for r in plan.tests)

    judge = J.Judge(plan.width, plan.hidden, tuple(J.HEADS), plan.stem_stride)
    judge = judge.to(memory_format=torch.channels_last)  # about 1.4x faster convolutions on CPU
    gen = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    curve, t0 = Curve(work, "judge"), time.time()
    n_clip = n_spin = plan.batch // plan.clip_divisor  # rotated frames come mostly from the spinning clips
    fit(judge, (images, all_targets(scenes, 1)),
        [(clips, all_targets(clip_scenes, NUM_FRAMES), n_clip), (spins, all_targets(spin_scenes, NUM_FRAMES), n_spin)],
        plan.batch, plan.steps, plan.optim, gen, rng, curve, "judge")
    train_motion_head(judge, [clips, spins], clip_scenes + spin_scenes, gen, rng, curve, plan)
    acc = evaluate(judge, test_images, test_scenes, test_clips, test_clip_scenes)
    log("judge accuracy on fresh renders: " + ", ".join(f"{k} {v:.3f}" for k, v in acc.items()))
    judge.eval()
    identity = instance_identity(judge, plan.identity_renders)
    log("identity read on the instances' own renders: " + ", ".join(f"{k} {v:.3f}" for k, v in identity.items()))
    save(judge, work / "judge.safetensors")
    info = {"accuracy": acc, "instances": identity, "steps": plan.steps, "seconds": round(time.time() - t0)}
    mark_done(work, "judge", info, plan)
    return info


def fit(judge: J.Judge, stills: tuple, clip_sets: list[tuple], batch: int, steps: int, optim: Optim,
        gen: torch.Generator, rng: np.random.Generator, curve: Curve, name: str) -> None:
    """Train every head on batches of stills (frames (N, 64, 64, 3), all_targets) and, from each clip set (clips
    (N, F, 64, 64, 3), all_targets, frames a batch[, True: the clips are pairs, 2k and 2k + 1, and a batch takes
    both of a pair at one frame]), random frames of random clips; augmented."""
    (images, img_t), n_img = stills, batch - sum(c[2] for c in clip_sets)
    opt, sched = optimizer(judge.parameters(), optim, steps)
    t0 = time.time()
    for step in range(steps):
        ii = np.sort(rng.choice(len(images), n_img, replace=False))
        picks = [frames_of(c[0], c[2], rng, paired=len(c) > 3 and c[3]) for c in clip_sets]
        x = torch.cat([to_pixels(images[ii])] + [to_pixels(np.stack([c[0][k, f] for k, f in zip(ci, fi)]))
                                                 for c, (ci, fi) in zip(clip_sets, picks)])
        logits, reg = judge(augment(x, gen).contiguous(memory_format=torch.channels_last))
        at = (img_t, ii, clip_sets, picks)
        loss = J.loss(logits, reg, {k: picked(*at, 0, k) for k in judge.heads}, picked(*at, 1), picked(*at, 2))
        optimizer_step(loss, opt, sched)
        if step % 50 == 0 or step == steps - 1:
            curve.add(step, loss=loss.item())
            log(f"{name} step {step}/{steps} loss {loss.item():.4f} ({time.time() - t0:.0f} s)")
    curve.save()


def frames_of(clips: np.ndarray, n: int, rng: np.random.Generator, paired: bool) -> tuple[np.ndarray, np.ndarray]:
    """(clip, frame) indices of n random frames of random clips; of n // 2 random pairs, both at one frame."""
    if not paired:
        return rng.integers(len(clips), size=n), rng.integers(NUM_FRAMES, size=n)
    k, f = rng.integers(len(clips) // 2, size=n // 2), rng.integers(NUM_FRAMES, size=n // 2)
    return np.stack([2 * k, 2 * k + 1], axis=1).ravel(), np.repeat(f, 2)


def picked(img_t: tuple, ii: np.ndarray, clip_sets: list[tuple], picks: list, j: int, head: str | None = None):
    """Target j (0: the heads', 1: regression, 2: its mask) of a batch's stills `ii` and clip frames `picks`."""
    part = lambda t: t[head] if head else t  # noqa: E731
    return torch.from_numpy(np.concatenate([part(img_t[j])[ii, 0]] + [
        part(c[1][j])[ci, fi] for c, (ci, fi) in zip(clip_sets, picks)]))


def train_motion_head(judge: J.Judge, clip_sets: list[np.ndarray], scenes: list, gen: torch.Generator,
                      rng: np.random.Generator, curve: Curve, plan: JudgePlan) -> None:
    """The clip-level motion head over the frozen per-frame trunk; frames are augmented independently, as the
    flicker of generated clips is, and motions are drawn equally often."""
    judge.eval()  # GroupNorm only: eval changes nothing but intent
    params = list(judge.frame_proj.parameters()) + list(judge.motion_head.parameters())
    opt, _ = optimizer(params, plan.head_optim, None)
    steps, batch = plan.head_steps, plan.head_batch
    labels = np.array([MOTIONS.index(s.motion) for s in scenes])
    p = 1.0 / np.bincount(labels, minlength=len(MOTIONS))[labels]
    refs = [(a, k) for a, c in enumerate(clip_sets) for k in range(len(c))]  # scenes' order
    for step in range(steps):
        idx = rng.choice(len(scenes), batch, replace=False, p=p / p.sum())
        frames = np.stack([clip_sets[a][k] for a, k in (refs[i] for i in idx)])  # (B, F, 64, 64, 3)
        with torch.no_grad():
            x = augment(to_pixels(frames.reshape(-1, 64, 64, 3)), gen)
            feats = judge.features(x.contiguous(memory_format=torch.channels_last))
            feats = feats.view(batch, frames.shape[1], -1)
            reg = judge.regress(feats)
        loss = F.cross_entropy(judge.motion_logits(feats, reg), torch.from_numpy(labels[idx]))
        optimizer_step(loss, opt)
        if step % 50 == 0 or step == steps - 1:
            curve.add(10_000 + step, motion=loss.item())
            log(f"judge motion head step {step}/{steps} loss {loss.item():.4f}")
    curve.save()
    judge.train()


def save(judge: J.Judge, path: Path) -> None:
    import json  # lazy: start-up time

    from safetensors.torch import save_file  # lazy: start-up time

    with atomic_path(path) as tmp:
        save_file({k: v.contiguous() for k, v in judge.state_dict().items()}, str(tmp),
                  metadata={"config": json.dumps(judge.config)})
