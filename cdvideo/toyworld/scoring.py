"""Fixed evaluation prompts of the miniature world and their scoring by the judge: which prompted attributes a
generated image or clip shows, and how much it looks like a personal instance."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

from cdvideo.toyworld import judge as J
from cdvideo.toyworld.world import (
    ACCESSORIES,
    BACKGROUNDS,
    backgrounds_for,
    CLASSES,
    COLOURS,
    MOTION_WORDS,
    MOTIONS,
    POSITION_WORDS,
    POSITIONS,
    RELATION_WORDS,
    RELATIONS,
    SIZE_CHANGES,
    TRANSLATIONS,
    clashes,
    prompt,
    subject_phrase,
)


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


CLIP_MOTIONS = tuple(m for m in MOTIONS if m not in ("still", "spinning"))  # translations and size changes


def clip_prompts(n: int = 16, seed: int = 0) -> list[EvalPrompt]:
    """n prompts 'a <colour> <class> <motion> on a <background> background' for the translations and size changes."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        cls, motion = CLASSES[(3 * i) % len(CLASSES)], CLIP_MOTIONS[i % len(CLIP_MOTIONS)]
        while True:
            colour, bg = list(COLOURS)[rng.integers(len(COLOURS))], BACKGROUNDS[rng.integers(len(BACKGROUNDS))]
            if not clashes(colour, bg):
                break
        out.append(EvalPrompt(prompt(subject_phrase(cls, colour), None, bg, motion),
                              {"cls": cls, "colour": colour, "background": bg, "motion": motion}, seed=i))
    return out


def asking(p: EvalPrompt, motion: str) -> str:
    """A clip prompt's words (`clip_prompts`) asking `motion` instead of its own."""
    return prompt(subject_phrase(p.asked["cls"], p.asked["colour"]), None, p.asked["background"], motion)


def without_motion(p: EvalPrompt) -> str:
    """A clip prompt's words without its motion's ('a green tree with red dots on a blue background')."""
    return p.text.replace(f" {MOTION_WORDS[p.asked['motion']]} ", " ", 1)


def spelled_prompts(inst, n: int = 16, clips: bool = False) -> list[EvalPrompt]:
    """n prompts naming every trait of a personal instance ('a big yellow ball with purple stripes on a gray
    background', backgrounds cycling; clips: a motion too, CLIP_MOTIONS cycling): the images any personalization
    of it can at best reach. Big: the judge reads a small (19 px) object's 4 px dots and 2 px rim less surely; but
    no size word where the clip grows or shrinks, as no caption of the world names one there."""
    bgs = backgrounds_for(inst.colour)
    motions = [CLIP_MOTIONS[i % len(CLIP_MOTIONS)] if clips else None for i in range(n)]
    return [EvalPrompt(prompt(subject_phrase(inst.cls, inst.colour, None if motions[i] in SIZE_CHANGES else "big",
                                             inst.pattern, inst.pattern_colour), None, bgs[i % len(bgs)], motions[i]),
                       {"background": bgs[i % len(bgs)], **({"motion": motions[i]} if clips else {})}, seed=i,
                       appearance=inst.appearance) for i in range(n)]


def _colours(rng: np.random.Generator, k: int, background: str) -> list[str]:
    """k different colours that show on the background."""
    return [str(c) for c in rng.permutation([c for c in COLOURS if not clashes(c, background)])[:k]]


def accessory_prompts(n: int = 24, seed: int = 0) -> list[EvalPrompt]:
    """n prompts 'a <colour> <class> wearing a <colour> <accessory> on a <background> background'."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        cls, acc, bg = CLASSES[i % len(CLASSES)], ACCESSORIES[i % len(ACCESSORIES)], BACKGROUNDS[(5 * i) % 9]
        colour, acc_colour = _colours(rng, 2, bg)
        out.append(EvalPrompt(prompt(f"{subject_phrase(cls, colour)} wearing {subject_phrase(acc, acc_colour)}",
                                     None, bg), {"cls": cls, "colour": colour, "accessory": acc,
                                                 "accessory_colour": acc_colour, "background": bg}, seed=i))
    return out


def companion_prompts(n: int = 24, seed: int = 0) -> list[EvalPrompt]:
    """n prompts 'a <colour> <class> next to / to the left of / to the right of a <colour> <class> on a
    <background> background' (the relation asked only when the words give a side)."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        cls, bg = CLASSES[i % len(CLASSES)], BACKGROUNDS[(7 * i) % 9]
        other = CLASSES[(i + 1 + i // len(CLASSES)) % len(CLASSES)]
        colour, other_colour = _colours(rng, 2, bg)
        relation = (*RELATIONS, None)[i % 3]
        words = RELATION_WORDS[relation][0]
        out.append(EvalPrompt(prompt(f"{subject_phrase(cls, colour)} {words} {subject_phrase(other, other_colour)}",
                                     None, bg), {"cls": cls, "colour": colour, "other": other,
                                                 "other_colour": other_colour, "relation": relation,
                                                 "background": bg}, seed=i))
    return out


def asked_in(text: str) -> dict[str, str | None]:
    """The attributes a prompt asks for besides the subject (None: not asked): background, position, motion, an
    accessory ('wearing a red hat': accessory, accessory_colour) and a second object ('next to a blue star', 'to
    the left of a cup': other, other_colour, and the relation when the words give a side)."""
    t = " " + " ".join(text.lower().replace(",", " ").split()) + " "
    background = next((b for b in BACKGROUNDS if f" {b} background" in t), None)
    position = next((p for p, words in POSITION_WORDS.items() if any(f" {w} " in t for w in words)), None)
    motion = next((m for m, words in MOTION_WORDS.items() if f" {words} " in t), None)
    asked = {"background": background, "position": position, "motion": motion}
    colours, accessories, classes = "|".join(COLOURS), "|".join(ACCESSORIES), "|".join(CLASSES)
    worn = re.search(rf" wearing an? (?:({colours}) )?({accessories}) ", t)
    if worn:
        asked |= {"accessory": worn[2], "accessory_colour": worn[1]}
    relations = "|".join(w for words in RELATION_WORDS.values() for w in words)
    beside = re.search(rf" ({relations}) an? (?:({colours}) )?({classes}) ", t)
    if beside:
        side = next(r for r, words in RELATION_WORDS.items() if beside[1] in words)
        asked |= {"other": beside[3], "other_colour": beside[2], "relation": side}
    return asked


def read_appearance(judge: J.Judge, photos: list) -> tuple:
    """The appearance (class, colour, pattern, pattern colour) the judge reads off a subject's photos."""
    reading = J.read(judge, photos)
    pc = reading.label("pattern_colour")
    return (reading.label("cls"), reading.label("colour"), reading.label("pattern"), None if pc == "none" else pc)


# what a prompt composes with its subject: each group shown when all its asked attributes are
GROUPS = {"background": ("background",), "position": ("position",), "motion": ("motion",),
          "accessory": ("accessory", "accessory_colour"), "second object": ("other", "other_colour", "relation")}


def shown(honoured: dict[str, bool]) -> dict[str, bool]:
    """For each group the prompt asked (GROUPS), whether the sample shows all of it."""
    return {g: all(honoured[k] for k in keys if k in honoured) for g, keys in GROUPS.items()
            if any(k in honoured for k in keys)}


def composition(honoured: dict[str, bool]) -> float:
    """Fraction of the asked background, position, motion, accessory and second object that a sample shows (NaN
    if none was asked)."""
    hits = list(shown(honoured).values())
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


# DreamBench's prompt kinds the world can show, and the paper's two (an accessory, a second object)
KINDS = ("background", "position", "property", "accessory", "companion", "motion")
MOTION_DIRECTIONS = TRANSLATIONS  # the motion prompts' directions
COMPANIONS = ("star", "cup", "heart", "ball")  # the second objects asked, the subject's own class left out


@dataclass(frozen=True)
class Sample:
    """One evaluation sample of a personal subject: its kind, prompt, the attribute it asks for, render seed."""
    kind: str
    text: str
    asked: dict
    seed: int


def eval_set(colour: str, subject: str, still_seeds: int, clip_seeds: int, kinds: tuple = KINDS) -> list[Sample]:
    """The fixed samples of a subject of body `colour` (stills `still_seeds` each, clips `clip_seeds` each), of the
    `kinds` asked: 8 backgrounds, 5 positions, the 7 other colours, 3 accessories ('a sks ball wearing a red hat'),
    3 second objects ('a sks ball next to a blue star'), 4 motions (clips)."""
    bgs = backgrounds_for(colour)
    out = [Sample("background", f"a {subject} on a {b} background", {"background": b}, s)
           for b in bgs[:8] for s in range(still_seeds)]
    out += [Sample("position", f"a {subject} {words[0]}", {"position": p}, s)
            for p, words in POSITION_WORDS.items() for s in range(still_seeds)]
    out += [Sample("property", f"{'an' if c[0] in 'aeiou' else 'a'} {c} {subject}", {"colour": c}, s)
            for c in COLOURS if c != colour for s in range(still_seeds)]
    for k, acc in enumerate(ACCESSORIES):  # colours other than the body's that show on the background
        bg = bgs[k]
        worn = [c for c in COLOURS if c != colour and not clashes(c, bg)][2 * k]
        out += [Sample("accessory", prompt(f"a {subject} wearing {subject_phrase(acc, worn)}", None, bg),
                       {"accessory": acc, "accessory_colour": worn}, s) for s in range(still_seeds)]
    others = [c for c in COMPANIONS if c not in subject.split()][:3]
    for k, other in enumerate(others):
        bg = bgs[k + 3]
        hue = [c for c in COLOURS if not clashes(c, bg)][3 * k + 1]
        out += [Sample("companion", prompt(f"a {subject} next to {subject_phrase(other, hue)}", None, bg),
                       {"other": other, "other_colour": hue}, s) for s in range(still_seeds)]
    out += [Sample("motion", f"a {subject} {MOTION_WORDS[m]}", {"motion": m}, s)
            for m in MOTION_DIRECTIONS for s in range(clip_seeds)]
    return [s for s in out if s.kind in kinds]


def score_samples(judge: J.Judge, appearance: tuple, samples: list[Sample], frames: list[list]) -> dict:
    """Per sample: whether the prompted attribute shows (`hit`) and identity (for a property change, the share of
    the traits other than the colour); per kind and overall: their means (composition: the mean over kinds)."""
    per = []
    for s, f in zip(samples, frames):
        reading = J.read(judge, f)
        found = J.attributes(reading, clip=s.kind == "motion")
        traits = tuple(t for t in J.TRAITS if t != "colour") if s.kind == "property" else J.TRAITS
        per.append({"kind": s.kind, "hit": float(all(J.honoured(found, s.asked).values())),
                    "identity": J.identity(reading, appearance, traits)})
    kinds = [k for k in KINDS if any(p["kind"] == k for p in per)]
    out = {f"composition_{k}": float(np.mean([p["hit"] for p in per if p["kind"] == k])) for k in kinds}
    out |= {f"identity_{k}": float(np.mean([p["identity"] for p in per if p["kind"] == k])) for k in kinds}
    out["composition"] = float(np.mean([out[f"composition_{k}"] for k in kinds]))
    out["identity"] = float(np.mean([out[f"identity_{k}"] for k in kinds]))
    out["samples"] = per
    return out
