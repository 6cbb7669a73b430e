"""The miniature world's vocabulary, scenes and captions (numpy only; drawing lives in `draw.py`).

A scene is one object (class, body colour, optional pattern in a second colour) of one of two sizes at one
of five positions on one of nine backgrounds; a clip adds a motion. Second edition: the object may wear an
accessory (hat, crown, bow) in a colour, and a second, small, plain object may stand beside it ("a red ball next
to a blue star"). Every word the captions use for a class, colour, accessory, background or motion is one token
of the SD1.5 tokenizer.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Optional

import numpy as np

CLASSES = ("ball", "box", "star", "heart", "ring", "cup", "moon", "tree")
COLOURS = {  # name -> RGB
    "red": (215, 40, 40), "orange": (240, 135, 20), "yellow": (240, 215, 40), "green": (40, 165, 60),
    "blue": (45, 95, 225), "purple": (145, 65, 200), "pink": (240, 130, 185), "white": (240, 240, 240),
}
PATTERNS = ("plain", "stripes", "dots", "rim", "spot")
BACKGROUNDS = ("blue", "green", "gray", "black", "striped", "dotted", "checkered", "grassy", "sandy")
POSITIONS = {"left": (17, 32), "right": (47, 32), "top": (32, 17), "bottom": (32, 47), "centre": (32, 32)}
SIZES = {"small": 19.0, "big": 31.0}  # object extent in pixels at 64 x 64
MOTIONS = ("still", "left", "right", "up", "down", "growing", "shrinking", "spinning")
# Motions the generator draws but pretraining never samples (no caption, no word): what a motion LoRA learns
NOVEL_MOTIONS = ("circling", "zigzag")
RESOLUTION = 64
NUM_FRAMES = 16

# Object colours that would vanish into a background
CLASHES = {("blue", "blue"), ("green", "green"), ("green", "grassy"), ("yellow", "sandy"), ("white", "striped")}
# Rotational symmetry order of each shape (0: a full circle) and of each pattern (0: symmetric under any angle)
SHAPE_SYMMETRY = {"ball": 0, "box": 4, "star": 5, "heart": 1, "ring": 0, "cup": 1, "moon": 1, "tree": 1}
PATTERN_SYMMETRY = {"plain": 0, "stripes": 2, "dots": 1, "rim": 0, "spot": 0}
# Patterns that stay readable on each shape (a rim on thin arms or a spot in a hole would not)
SHAPE_PATTERNS = {"star": ("plain", "stripes", "dots", "spot"), "ring": ("plain", "stripes", "dots"),
                  "moon": ("plain", "stripes", "dots", "spot")}
POSITION_WORDS = {"left": ("on the left",), "right": ("on the right",), "top": ("at the top",),
                  "bottom": ("at the bottom",), "centre": ("in the centre", "in the middle")}
MOTION_WORDS = {"left": "moving left", "right": "moving right", "up": "moving up", "down": "moving down",
                "growing": "growing", "shrinking": "shrinking", "spinning": "spinning"}
SIZE_WORDS = {"small": ("small", "tiny"), "big": ("big", "large")}
ACCESSORIES = ("hat", "crown", "bow")  # drawn on a big object's top
# Where the object stands relative to its companion (the companion takes the other side, small and plain)
RELATIONS = ("left", "right")
RELATION_WORDS = {"left": ("to the left of",), "right": ("to the right of",), None: ("next to", "beside")}
COMPANION_MOTIONS = ("still", "up", "down", "growing", "shrinking", "spinning")  # none crosses the companion
# A clip of each motion played backwards is a clip of this one (`geometry` draws each pair as t and 1 - t)
BACKWARDS = {"left": "right", "right": "left", "up": "down", "down": "up", "growing": "shrinking",
             "shrinking": "growing", "still": "still", "spinning": "spinning"}
TRANSLATIONS = ("left", "right", "up", "down")
# A translation's path: None across the frame (from about 14 to about 50 px, so its first frame tells which way it
# goes); "short": 17-21 px the asked way from about the centre, so that only the caption tells; "middle": as short,
# and a size change from the middle extent of its range (1.5 times or a 1.5th of it), which its first frame does
# not tell either; "sizes": such size changes, translations across the frame. Each sweep: the motions it moves
SIZE_CHANGES = ("growing", "shrinking")
SWEPT_MOTIONS = {"short": TRANSLATIONS, "middle": TRANSLATIONS + SIZE_CHANGES, "sizes": SIZE_CHANGES}
SWEEPS = (None, *SWEPT_MOTIONS)


@dataclass(frozen=True)
class Scene:
    """Ground-truth labels of one image or clip; `seed` fixes jitter and texture phase."""
    cls: str
    colour: str
    pattern: str = "plain"
    pattern_colour: Optional[str] = None
    background: str = "gray"
    position: str = "centre"
    size: Optional[str] = "big"  # None while growing or shrinking
    motion: Optional[str] = None  # None for a still image
    seed: int = 0
    accessory: Optional[str] = None  # hat, crown or bow, on a big object
    accessory_colour: Optional[str] = None
    other: Optional[str] = None  # the companion's class: a small plain object on the other side
    other_colour: Optional[str] = None
    relation: Optional[str] = None  # where this object stands relative to the companion: left or right
    sweep: Optional[str] = None  # a translation's (or size change's) path (SWEEPS)

    def labels(self) -> dict:
        return asdict(self)

    def colours_swapped(self) -> Scene:
        """The same scene with the body's and the pattern's colours exchanged (a binding contrast)."""
        return replace(self, colour=self.pattern_colour, pattern_colour=self.colour)

    @property
    def appearance(self) -> tuple:
        """What identifies an object: (class, colour, pattern, pattern colour)."""
        return (self.cls, self.colour, self.pattern, self.pattern_colour)


def symmetry(cls: str, pattern: str) -> int:
    """Rotational symmetry order of an object (0: looks the same under any rotation)."""
    s, p = SHAPE_SYMMETRY[cls], PATTERN_SYMMETRY[pattern]
    if s == 0 or p == 0:
        return s or p
    return int(np.gcd(s, p))


def can_spin(cls: str, pattern: str) -> bool:
    """Spinning is visible only for objects that are not rotationally symmetric under small angles."""
    return symmetry(cls, pattern) != 0


def clashes(colour: str, background: str) -> bool:
    return (colour, background) in CLASHES


def edge_colours(colour: str, pattern: str = "plain", pattern_colour: str | None = None) -> tuple[str, ...]:
    """The colours along an object's outline, which a background of the same colour hides (`clashes`): the body's,
    and a rim's; stripes, dots and a spot lie inside the outline and show on any background."""
    return (colour, pattern_colour) if pattern == "rim" and pattern_colour else (colour,)


def backgrounds_for(colour: str) -> list[str]:
    """The backgrounds an object of `colour` shows on, in BACKGROUNDS' order."""
    return [b for b in BACKGROUNDS if not clashes(colour, b)]


def sample_scene(rng: np.random.Generator, clip: bool = False, exclude: frozenset = frozenset(),
                 pattern_p: float = 0.4, accessory_p: float = 0.0, companion_p: float = 0.0) -> Scene:
    """A random scene (clip: with a motion); appearances in `exclude` (the personal instances) never occur, alone
    or with anything. An accessory and a companion each come with their probability (0: no draw is made, so the
    first edition's scenes come out as they did)."""
    while True:
        cls = CLASSES[rng.integers(len(CLASSES))]
        colour = list(COLOURS)[rng.integers(len(COLOURS))]
        patterns = SHAPE_PATTERNS.get(cls, PATTERNS)[1:]
        pattern = "plain" if rng.random() >= pattern_p else patterns[rng.integers(len(patterns))]
        pc = None
        if pattern != "plain":
            others = [c for c in COLOURS if c != colour]
            pc = others[rng.integers(len(others))]
        bg = BACKGROUNDS[rng.integers(len(BACKGROUNDS))]
        if clashes(colour, bg) or (cls, colour, pattern, pc) in exclude:
            continue
        scene = Scene(cls, colour, pattern, pc, bg, list(POSITIONS)[rng.integers(len(POSITIONS))],
                      list(SIZES)[rng.integers(len(SIZES))], seed=int(rng.integers(2**31)))
        if accessory_p and rng.random() < accessory_p:
            scene = with_accessory(scene, rng)
        if companion_p and rng.random() < companion_p:
            scene = with_companion(scene, rng)
        return with_motion(scene, rng) if clip else scene


def _pick(rng: np.random.Generator, options) -> str:
    options = list(options)
    return options[rng.integers(len(options))]


def with_accessory(scene: Scene, rng: np.random.Generator, accessory: str | None = None,
                   colour: str | None = None) -> Scene:
    """The object wearing an accessory (random kind and colour unless given): big, and not at the top, so that the
    accessory stays in the frame; its colour differs from the body's and shows on the background."""
    colour = colour or _pick(rng, (c for c in COLOURS if c != scene.colour and not clashes(c, scene.background)))
    position = "centre" if scene.position == "top" else scene.position
    return replace(scene, accessory=accessory or _pick(rng, ACCESSORIES), accessory_colour=colour, size="big",
                   position=position)


def with_companion(scene: Scene, rng: np.random.Generator, other: str | None = None, colour: str | None = None,
                   relation: str | None = None) -> Scene:
    """The object (big) beside a small plain companion of another class: the object on the `relation` side."""
    other = other or _pick(rng, (c for c in CLASSES if c != scene.cls))
    colour = colour or _pick(rng, (c for c in COLOURS if not clashes(c, scene.background)))
    relation = relation or _pick(rng, RELATIONS)
    return replace(scene, other=other, other_colour=colour, relation=relation, position=relation, size="big")


def companion(scene: Scene) -> Scene | None:
    """The companion as a scene of its own (small, plain, still, on the other side), or None."""
    if scene.other is None:
        return None
    side = "right" if scene.relation == "left" else "left"
    return Scene(scene.other, scene.other_colour, background=scene.background, position=side, size="small",
                 seed=(scene.seed * 7919 + 1) % 2**31)


def allowed_motions(scene: Scene) -> list[str]:
    """The motions a clip of the scene may show: spinning only where visible; with a companion none that crosses
    it; with an accessory none that takes it out of the frame or shrinks it."""
    allowed = [m for m in MOTIONS if m != "spinning" or can_spin(scene.cls, scene.pattern)]
    if scene.other is not None:
        allowed = [m for m in allowed if m in COMPANION_MOTIONS]
    if scene.accessory is not None:
        allowed = [m for m in allowed if m not in ("up", "growing", "shrinking")]
    return allowed


def with_motion(scene: Scene, rng: np.random.Generator, motion: str | None = None) -> Scene:
    """The scene as a clip with `motion` (random among those its object allows; a novel motion only when asked)."""
    allowed = allowed_motions(scene)
    motion = motion or allowed[rng.integers(len(allowed))]
    if motion in NOVEL_MOTIONS and scene.other is None and scene.accessory is None:
        return replace(scene, position="centre", size="small", motion=motion)  # its path spans the frame
    if motion not in allowed:
        where = " beside another object" if scene.other else " wearing an accessory" if scene.accessory else ""
        raise ValueError(f"a {scene.pattern} {scene.cls}{where} cannot be seen {MOTION_WORDS.get(motion, motion)}")
    position, size = scene.position, scene.size
    if motion in ("left", "right") and position in ("left", "right"):
        position = "centre"  # moves along its row: top, centre or bottom
    if motion in ("up", "down") and position in ("top", "bottom"):
        position = "centre"
    if motion in ("growing", "shrinking"):
        size = None
    return replace(scene, position=position, size=size, motion=motion)


def with_sweep(scene: Scene, sweep: str | None) -> Scene:
    """A translation clip ("short", "middle") or size change ("middle", "sizes") along the `sweep` path (SWEEPS); any
    other scene as it is."""
    if sweep not in SWEEPS:
        raise ValueError(f"no sweep {sweep!r}; choose from {SWEEPS}")
    return replace(scene, sweep=sweep) if scene.motion in SWEPT_MOTIONS.get(sweep, ()) else scene


def played_backwards(scene: Scene) -> Scene:
    """The scene whose clip is this one's frames in reverse order: the opposite motion (spinning the other way is
    spinning). A short sweep played backwards ends about the centre, which no world clip does."""
    if scene.motion not in BACKWARDS:
        raise ValueError(f"a clip {MOTION_WORDS.get(scene.motion, scene.motion)} has no motion word backwards")
    if scene.sweep is not None:
        raise ValueError(f"a {scene.sweep} sweep played backwards is no clip of the world")
    return replace(scene, motion=BACKWARDS[scene.motion])


# -- Geometry: where the object is, how large and at what angle, in each frame ------------------------------
def geometry(scene: Scene, num_frames: int = 1) -> np.ndarray:
    """(F, 4) per-frame centre x, centre y, extent (px) and angle (degrees) of the object."""
    rng = np.random.default_rng([scene.seed, 1])
    cx, cy = POSITIONS[scene.position]
    cx, cy = cx + rng.uniform(-2, 2), cy + rng.uniform(-2, 2)
    extent = SIZES[scene.size or "big"] * rng.uniform(0.92, 1.08)
    t = np.linspace(0.0, 1.0, num_frames) if num_frames > 1 else np.zeros(1)
    g = np.tile(np.array([cx, cy, extent, 0.0]), (len(t), 1))
    start, end = 14 + rng.uniform(-2, 2), 50 + rng.uniform(-2, 2)
    m = scene.motion
    if m in TRANSLATIONS and scene.sweep is not None:  # short, from the centre: its start does not tell which way
        a, length = 32 + rng.uniform(-3, 3), rng.uniform(17, 21)
        g[:, 0 if m in ("left", "right") else 1] = a + length * t * (1 if m in ("right", "down") else -1)
    elif m in ("left", "right"):
        g[:, 0] = start + (end - start) * (t if m == "right" else 1 - t)
    elif m in ("up", "down"):
        g[:, 1] = start + (end - start) * (t if m == "down" else 1 - t)
    elif m in ("growing", "shrinking"):
        lo, hi = 12 * rng.uniform(0.95, 1.05), 32 * rng.uniform(0.95, 1.05)
        if scene.sweep is not None:  # from the range's geometric middle, either way ("middle", "sizes")
            lo = (lo * hi) ** 0.5 / (1.5 if m == "shrinking" else 1.0)
            hi = lo * 1.5
        g[:, 2] = lo + (hi - lo) * (t if m == "growing" else 1 - t)
    elif m == "spinning":
        g[:, 3] = 180.0 * t * (1 if rng.random() < 0.5 else -1)
    elif m == "circling":  # once around the centre, clockwise on screen, from the left
        r = 14 * rng.uniform(0.9, 1.1)
        g[:, 0], g[:, 1] = 32 - r * np.cos(2 * np.pi * t), 32 - r * np.sin(2 * np.pi * t)
    elif m == "zigzag":  # left to right, up and down twice
        amp = 11 * rng.uniform(0.9, 1.1)
        g[:, 0] = start + (end - start) * t
        g[:, 1] = 32 - amp * (1 - 4 * np.abs(((2 * t + 0.25) % 1) - 0.5))
    return g


# -- Captions ----------------------------------------------------------------------------------------------
def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def pattern_phrase(pattern: str, pattern_colour: str | None) -> str:
    """' with white stripes', ' with a blue rim'...; empty for a plain object."""
    if pattern == "plain":
        return ""
    if pattern in ("stripes", "dots"):
        return f" with {pattern_colour} {pattern}"
    return f" with {_article(pattern_colour)} {pattern_colour} {pattern}"


def subject_phrase(cls: str, colour: str | None = None, size: str | None = None, pattern: str = "plain",
                   pattern_colour: str | None = None, prefix: str = "") -> str:
    """'a small red ball with white dots' (the article agrees with the next word)."""
    words = " ".join(w for w in (size, colour, cls) if w)
    return f"{prefix}{_article(words)} {words}{pattern_phrase(pattern, pattern_colour)}"


def describe(scene: Scene, rng: np.random.Generator, keep: float = 0.8,
             pattern_alone: float = 0.0) -> tuple[str, dict]:
    """One of several phrasings of the scene, and which attributes it names. Each attribute but the class is
    named with probability about `keep` (the pattern, when the colour is; where the colour is not, with
    probability `pattern_alone`: "a tree with red dots"); an accessory and a companion with 0.9, their colours with
    `keep`, the companion's side with 0.5 (else "next to" or "beside")."""
    def named(p: float = keep) -> bool:
        return bool(rng.random() < p)

    size = scene.size if scene.size and named(keep * 0.7) else None
    colour = scene.colour if named() else None
    pattern = scene.pattern if colour and scene.pattern != "plain" and named(keep) else "plain"
    if pattern_alone and not colour and scene.pattern != "plain" and named(pattern_alone):
        pattern = scene.pattern
    prefix = ("", "a photo of ", "an image of ")[rng.choice(3, p=[0.6, 0.3, 0.1])]
    size_word = SIZE_WORDS[size][rng.integers(2)] if size else None
    parts = [subject_phrase(scene.cls, colour, size_word, pattern, scene.pattern_colour, prefix)]
    accessory = scene.accessory if scene.accessory and named(0.9) else None
    accessory_colour = scene.accessory_colour if accessory and named() else None
    if accessory:
        parts.append(f"wearing {subject_phrase(accessory, accessory_colour)}")
    motion = scene.motion if scene.motion and scene.motion != "still" and named(0.95) else None
    if motion:
        parts.append(MOTION_WORDS[motion])
    other = scene.other if scene.other and named(0.9) else None
    other_colour = scene.other_colour if other and named() else None
    relation = scene.relation if other and named(0.5) else None  # else "next to" or "beside": no side
    if other:
        words = RELATION_WORDS[relation]
        parts.append(f"{words[rng.integers(len(words))]} {subject_phrase(other, other_colour)}")
    alone = scene.other is None
    position = scene.position if alone and (scene.motion in (None, "still") or named(0.4)) and named() else None
    if position:
        words = POSITION_WORDS[position]
        parts.append(words[rng.integers(len(words))])
    text = " ".join(parts)
    background = scene.background if named() else None
    if background:
        text = (f"{text} on a {background} background", f"{text}, {background} background",
                f"{text} in front of a {background} background")[rng.integers(3)]
    mentioned = {"cls": scene.cls, "colour": colour, "size": size, "position": position, "background": background,
                 "motion": motion, "pattern": pattern if pattern != "plain" else None,
                 "pattern_colour": scene.pattern_colour if pattern != "plain" else None, "accessory": accessory,
                 "accessory_colour": accessory_colour, "other": other, "other_colour": other_colour,
                 "relation": relation}
    return text, mentioned


def caption(scene: Scene, rng: np.random.Generator, keep: float = 0.8, pattern_alone: float = 0.0) -> str:
    """A random caption of the scene (see `describe`)."""
    return describe(scene, rng, keep, pattern_alone)[0]


def prompt(cls_phrase: str, position: str | None = None, background: str | None = None,
           motion: str | None = None) -> str:
    """The canonical phrasing used for evaluation prompts: '<subject> [motion] [position] on a <bg> background'."""
    parts = [cls_phrase]
    if motion and motion != "still":
        parts.append(MOTION_WORDS[motion])
    if position:
        parts.append(POSITION_WORDS[position][0])
    text = " ".join(parts)
    return f"{text} on a {background} background" if background else text
