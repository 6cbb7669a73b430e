"""Fixed evaluation prompts of the miniature world and their scoring by the judge: which prompted attributes a
generated image or clip shows, and how much it looks like a personal instance."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from . import judge as J
from .world import (BACKGROUNDS, CLASSES, COLOURS, MOTION_WORDS, MOTIONS, POSITION_WORDS, POSITIONS, clashes, prompt,
                    subject_phrase)


@dataclass
class EvalPrompt:
    text: str
    asked: dict[str, str | None]  # attribute -> prompted value (None: not prompted)
    seed: int = 0
    appearance: tuple | None = None  # the personal instance it should show, if any


@dataclass
class Scores:
    """Rates over a set of samples: attribute -> fraction honoured; identity -> mean identity (judge.identity)."""
    honoured: dict[str, float] = field(default_factory=dict)
    identity: float | None = None
    n: int = 0
    found: list[dict[str, str]] = field(default_factory=list)  # per sample: what the judge read


def image_prompts(n: int = 48, seed: int = 0) -> list[EvalPrompt]:
    """n prompts 'a <colour> <class> <position> on a <background> background', attributes balanced by cycling."""
    rng = np.random.default_rng(seed)
    cols, bgs, poss = list(COLOURS), list(BACKGROUNDS), list(POSITIONS)
    out = []
    for i in range(n):
        cls, pos = CLASSES[i % len(CLASSES)], poss[(i // len(CLASSES) + i) % len(poss)]
        while True:
            colour, bg = cols[rng.integers(len(cols))], bgs[rng.integers(len(bgs))]
            if not clashes(colour, bg):
                break
        out.append(EvalPrompt(prompt(subject_phrase(cls, colour), pos, bg),
                              {"cls": cls, "colour": colour, "position": pos, "background": bg}, seed=i))
    return out


def clip_prompts(n: int = 16, seed: int = 0) -> list[EvalPrompt]:
    """n prompts 'a <colour> <class> <motion> on a <background> background' for the translations and size changes."""
    rng = np.random.default_rng(seed)
    motions = [m for m in MOTIONS if m not in ("still", "spinning")]
    out = []
    for i in range(n):
        cls, motion = CLASSES[(3 * i) % len(CLASSES)], motions[i % len(motions)]
        while True:
            colour, bg = list(COLOURS)[rng.integers(len(COLOURS))], BACKGROUNDS[rng.integers(len(BACKGROUNDS))]
            if not clashes(colour, bg):
                break
        out.append(EvalPrompt(prompt(subject_phrase(cls, colour), None, bg, motion),
                              {"cls": cls, "colour": colour, "background": bg, "motion": motion}, seed=i))
    return out


def asked_in(text: str) -> dict[str, str | None]:
    """The attributes a prompt asks for besides the subject: background, position, motion (None: not asked)."""
    t = " " + " ".join(text.lower().replace(",", " ").split()) + " "
    background = next((b for b in BACKGROUNDS if f" {b} background" in t), None)
    position = next((p for p, words in POSITION_WORDS.items() if any(f" {w} " in t for w in words)), None)
    motion = next((m for m, words in MOTION_WORDS.items() if f" {words} " in t), None)
    return {"background": background, "position": position, "motion": motion}


def read_appearance(judge: J.Judge, photos: list) -> tuple:
    """The appearance (class, colour, pattern, pattern colour) the judge reads off a subject's photos."""
    reading = J.read(judge, photos)
    pc = reading.label("pattern_colour")
    return (reading.label("cls"), reading.label("colour"), reading.label("pattern"), None if pc == "none" else pc)


def composition(honoured: dict[str, bool]) -> float:
    """Fraction of the asked background, position and motion that a sample shows (NaN if none was asked)."""
    hits = [v for k, v in honoured.items() if k in ("background", "position", "motion")]
    return float(np.mean(hits)) if hits else float("nan")


def score(judge: J.Judge, samples: list, prompts: list[EvalPrompt]) -> Scores:
    """Judge every sample (a list of frames: one for an image) against its prompt."""
    hits: dict[str, list[bool]] = {}
    ids, founds = [], []
    for frames, p in zip(samples, prompts):
        reading = J.read(judge, frames)
        found = J.attributes(reading, clip=len(frames) > 1)
        founds.append(found)
        for k, ok in J.honoured(found, p.asked).items():
            hits.setdefault(k, []).append(ok)
        if p.appearance is not None:
            ids.append(J.identity(reading, p.appearance))
    return Scores({k: float(np.mean(v)) for k, v in hits.items()}, float(np.mean(ids)) if ids else None,
                  len(samples), founds)
