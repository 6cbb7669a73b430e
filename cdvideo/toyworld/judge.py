"""The miniature world's judge: a small CNN that reads a 64 px frame's labels, as CLIP and DINO measure real
images. Per frame it classifies class, colour, pattern, pattern colour, background, position and size, and
regresses the object's centre, extent and angle; a clip's motion is read from those per-frame regressions.

Identity of a personal instance is the expected share of its four traits (class, colour, pattern, pattern colour)
that a frame shows: the mean of the judge's probabilities of them. Instances are trait combinations that never
occur in pretraining, so the base model prompted with the class word shows the class and the rest by chance only.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image

from cdvideo.toyworld.world import (
    ACCESSORIES,
    BACKGROUNDS,
    CLASSES,
    COLOURS,
    MOTIONS,
    PATTERNS,
    POSITIONS,
    RELATIONS,
    SIZES,
    Scene,
    geometry,
    symmetry,
)

MOTION_FRAMES = 16  # a clip's per-frame readings are resampled to this many frames for the motion head
HEADS = {"cls": CLASSES, "colour": tuple(COLOURS), "pattern": PATTERNS, "pattern_colour": (*COLOURS, "none"),
         "background": BACKGROUNDS, "position": tuple(POSITIONS), "size": tuple(SIZES),
         # second edition: the accessory, the companion, and where the object stands relative to it
         "accessory": (*ACCESSORIES, "none"), "accessory_colour": (*COLOURS, "none"), "other": (*CLASSES, "none"),
         "other_colour": (*COLOURS, "none"), "relation": (*RELATIONS, "none")}
FIRST_EDITION_HEADS = ("cls", "colour", "pattern", "pattern_colour", "background", "position", "size")
REGRESSION = ("cx", "cy", "log_extent", "cos", "sin")  # cos/sin of (symmetry order x angle)
IGNORE = -100
WEIGHTS_FILE = "judge.safetensors"


class Judge(nn.Module):
    """(B, 3, 64, 64) frames in [-1, 1] -> per-head logits and (B, 5) regressions. Coordinates enter as two
    extra channels, so position survives the convolutions."""

    digest = ""  # of the weights file it was loaded from (`load`): results cached by a study name their judge

    def __init__(self, width: int = 32, hidden: int = 256, heads: tuple[str, ...] = FIRST_EDITION_HEADS,
                 stem_stride: int = 2):
        super().__init__()
        w = width

        def block(cin, cout, stride):
            return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1), nn.GroupNorm(8, cout), nn.SiLU())

        # stem_stride 1 (second edition) reads the first layer at full resolution, where a small object's 4 px
        # dots are; the same layers down to the same 8 x 8 grid, with the strides moved
        strides = (1, 2, 1, 2, 2) if stem_stride == 1 else (2, 1, 2, 1, 2)
        widths = (5, w // 2, w, w, 2 * w, 2 * w)
        self.trunk = nn.Sequential(*(block(widths[i], widths[i + 1], st) for i, st in enumerate(strides)),
                                   nn.Conv2d(2 * w, 16, 1),
                                   nn.Flatten(), nn.Linear(16 * 8 * 8, hidden), nn.SiLU())
        self.heads = nn.ModuleDict({k: nn.Linear(hidden, len(HEADS[k])) for k in heads})
        self.regress = nn.Linear(hidden, len(REGRESSION))
        self.frame_proj = nn.Linear(hidden, 16)
        self.motion_head = nn.Sequential(nn.Linear(MOTION_FRAMES * (16 + len(REGRESSION)), 128), nn.SiLU(),
                                         nn.Linear(128, len(MOTIONS)))
        self.config = {"width": width, "hidden": hidden, "heads": list(heads), "stem_stride": stem_stride}

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, hidden) penultimate features of frames (B, 3, 64, 64) in [-1, 1]."""
        b, _, h, w = x.shape
        ys, xs = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
        coords = torch.stack([xs, ys]).to(x)[None].expand(b, -1, -1, -1)
        return self.trunk(torch.cat([x, coords], dim=1))

    def forward(self, x: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        f = self.features(x)
        return {k: head(f) for k, head in self.heads.items()}, self.regress(f)

    def motion_logits(self, feats: torch.Tensor, reg: torch.Tensor) -> torch.Tensor:
        """(B, F, hidden) per-frame features and (B, F, 5) regressions of clips -> (B, len(MOTIONS)) logits."""
        x = torch.cat([self.frame_proj(resample(feats)), resample(reg)], dim=-1)  # (B, 16, 21)
        return self.motion_head(x.flatten(1))


def resample(seq: torch.Tensor, frames: int = MOTION_FRAMES) -> torch.Tensor:
    """Linear interpolation of (B, F, D) per-frame values to (B, frames, D)."""
    if seq.shape[1] == frames:
        return seq
    return F.interpolate(seq.transpose(1, 2), size=frames, mode="linear", align_corners=True).transpose(1, 2)


# -- Targets and loss (used by the build script; here so that they stay next to the heads) ------------------
def targets(scene: Scene, num_frames: int) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """Per-frame class targets (IGNORE where undefined), regression targets (F, 5) and their mask (F, 5)."""
    g = geometry(scene, num_frames)
    moving = scene.motion not in (None, "still")
    t = {"cls": CLASSES.index(scene.cls), "colour": HEADS["colour"].index(scene.colour),
         "pattern": PATTERNS.index(scene.pattern),
         "pattern_colour": HEADS["pattern_colour"].index(scene.pattern_colour or "none"),
         "background": BACKGROUNDS.index(scene.background),
         "position": IGNORE if moving else HEADS["position"].index(scene.position),
         "size": IGNORE if scene.size is None or scene.motion in ("growing", "shrinking")
         else HEADS["size"].index(scene.size),
         **{k: HEADS[k].index(getattr(scene, k) or "none") for k in HEADS if k not in FIRST_EDITION_HEADS}}
    cls_t = {k: np.full(num_frames, v, np.int64) for k, v in t.items()}
    n = symmetry(scene.cls, scene.pattern)
    theta = np.deg2rad(g[:, 3]) * n
    reg = np.stack([g[:, 0] / 64, g[:, 1] / 64, np.log(g[:, 2] / 20), np.cos(theta), np.sin(theta)], axis=1)
    mask = np.ones_like(reg)
    if n == 0:
        mask[:, 3:] = 0
    return cls_t, reg.astype(np.float32), mask.astype(np.float32)


def loss(logits: dict, reg: torch.Tensor, cls_t: dict, reg_t: torch.Tensor, reg_mask: torch.Tensor) -> torch.Tensor:
    """Sum of the (judge's) heads' cross-entropies and the masked regression MSE (x10, as its targets are small)."""
    total = sum(F.cross_entropy(logits[k], cls_t[k], ignore_index=IGNORE) for k in logits)
    return total + 10 * ((reg - reg_t).pow(2) * reg_mask).sum() / reg_mask.sum().clamp_min(1)


# -- Loading and reading frames ---------------------------------------------------------------------------
def weights_path() -> Path:
    return Path(str(resources.files("cdvideo.toyworld") / "assets" / WEIGHTS_FILE))


def load(path: str | Path | None = None) -> Judge:
    """The shipped judge (or one at `path`), in eval mode, in channels-last memory format (its reads 1.38x faster on
    CPU than NCHW; features within 2e-5)."""
    from safetensors import safe_open  # lazy: start-up time
    from safetensors.torch import load_file  # lazy: start-up time

    path = Path(path) if path else weights_path()
    with safe_open(str(path), framework="pt") as f:
        config = json.loads(f.metadata()["config"])
    judge = Judge(**{"heads": FIRST_EDITION_HEADS, **config})
    judge.load_state_dict(load_file(str(path)))
    judge.digest = hashlib.sha256(path.read_bytes()).hexdigest()[:12]
    return judge.eval().to(memory_format=torch.channels_last)


def to_tensor(frames) -> torch.Tensor:
    """PIL images, or uint8 arrays (F, H, W, 3) -> (F, 3, 64, 64) in [-1, 1] (resized to 64 px if needed)."""

    arrays = []
    for f in frames:
        im = f if isinstance(f, Image.Image) else Image.fromarray(np.asarray(f, np.uint8))
        if im.size != (64, 64):
            im = im.convert("RGB").resize((64, 64), Image.Resampling.BICUBIC)
        arrays.append(np.asarray(im.convert("RGB"), np.float32))
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2) / 127.5 - 1.0


@dataclass
class Reading:
    """The judge's reading of one image or clip: per-frame probabilities and regressions; for a clip, the motion
    probabilities."""
    probs: dict[str, torch.Tensor]  # head -> (F, K)
    regression: torch.Tensor  # (F, 5)
    motion: torch.Tensor | None = None  # (len(MOTIONS),)

    def mean(self, head: str) -> torch.Tensor:
        return self.probs[head].mean(dim=0)

    def label(self, head: str) -> str:
        return HEADS[head][int(self.mean(head).argmax())]


@torch.no_grad()
def read(judge: Judge, frames, batch: int = 256) -> Reading:
    x = to_tensor(frames).contiguous(memory_format=torch.channels_last)  # (F, 3, 64, 64)
    feats = torch.cat([judge.features(x[i:i + batch]) for i in range(0, len(x), batch)])
    reg = judge.regress(feats)
    probs = {k: head(feats).softmax(-1) for k, head in judge.heads.items()}
    motion_p = judge.motion_logits(feats[None], reg[None])[0].softmax(-1) if len(x) > 1 else None
    return Reading(probs, reg, motion_p)


# -- Scores ------------------------------------------------------------------------------------------------
TRAITS = ("cls", "colour", "pattern", "pattern_colour")  # an instance's appearance, in this order


def identity(reading: Reading, appearance: tuple, traits: tuple[str, ...] = TRAITS) -> float:
    """Expected share of an instance's traits (class, colour, pattern, pattern colour; or those in `traits`, e.g.
    all but the colour a prompt changes) that the frames show: the mean of the judge's probabilities of them,
    averaged over frames."""
    p = reading.probs
    wanted = dict(zip(TRAITS, appearance))
    per_frame = sum(p[t][:, HEADS[t].index(wanted[t] or "none")] for t in traits) / len(traits)
    return float(per_frame.mean())


def swapped(reading: Reading, appearance: tuple) -> np.ndarray:
    """Per frame, whether the judge reads an instance's two colours exchanged (its body colour as the pattern's and
    the pattern's as the body's): a binding misread, not a missing trait."""
    _, colour, _, pattern_colour = appearance
    read_colour = [HEADS["colour"][int(i)] for i in reading.probs["colour"].argmax(-1)]
    read_pattern = [HEADS["pattern_colour"][int(i)] for i in reading.probs["pattern_colour"].argmax(-1)]
    return np.array([(c, p) == (pattern_colour, colour) for c, p in zip(read_colour, read_pattern)])


def motion(reading: Reading) -> str:
    """The clip's motion: the motion head's reading of the per-frame features and regressions (centre, extent,
    angle), trained on rendered clips with independent per-frame noise so that flicker does not read as motion."""
    return MOTIONS[int(reading.motion.argmax())]


def attributes(reading: Reading, clip: bool) -> dict[str, str]:
    """The judge's labels for an image (or a clip: labels of the mean probabilities, plus its motion)."""
    out = {k: reading.label(k) for k in reading.probs}
    if clip:
        out["motion"] = motion(reading)
    return out


def honoured(found: dict[str, str], asked: dict[str, str | None]) -> dict[str, bool]:
    """For each attribute the prompt asked for (non-None), whether the judge found it."""
    return {k: found.get(k) == v for k, v in asked.items() if v is not None}
