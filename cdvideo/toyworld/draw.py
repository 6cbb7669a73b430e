"""Drawing the miniature world with numpy and PIL: backgrounds, objects, scenes and clips, all deterministic.

Objects are drawn 4x supersampled (hard edges, then a box filter), so their edges are antialiased and they
move by sub-pixel steps in clips.
"""

from __future__ import annotations

import functools
import math

import numpy as np
from PIL import Image, ImageDraw

from cdvideo.toyworld.world import COLOURS, NUM_FRAMES, RESOLUTION, Scene, companion, geometry

SS = 4  # supersampling factor
TRUNK = (110, 70, 35)
PLAIN_BACKGROUNDS = {"blue": (35, 60, 135), "green": (45, 110, 55), "gray": (125, 125, 125), "black": (22, 22, 26)}
SPOT_CENTRE = {"heart": (0.0, 0.05), "cup": (-0.12, 0.0), "moon": (-0.5, 0.15), "tree": (0.0, 0.05)}
DOTS = ((-0.42, -0.35), (0.35, -0.42), (0.02, 0.08), (-0.45, 0.45), (0.45, 0.38))
# Second edition: bolder dots (the first edition's were 0.2 r: a small object's were 4 px, a 4x4-pixel latent
# cell's worth). A wider rim or spot would hide the body's colour: a 0.22 r rim covers 46% of a box, and the
# first edition's judge then read the body colour of rimmed objects in 40% of renders
DOT_RADIUS, RIM_WIDTH, SPOT_RADIUS = 0.25, 0.15, 0.38
# Accessories, in units of the object's radius: x to the right, y up from the accessory's base, which sits
# ACCESSORY_SINK below the top of the body
ACCESSORY_SINK = 0.15
ACCESSORY_SHAPES = {
    "hat": [[(-0.62, 0.0), (0.62, 0.0), (0.62, 0.15), (-0.62, 0.15)],
            [(-0.38, 0.15), (0.38, 0.15), (0.38, 0.72), (-0.38, 0.72)]],
    "crown": [[(-0.55, 0.0), (0.55, 0.0), (0.55, 0.62), (0.28, 0.3), (0.0, 0.68), (-0.28, 0.3), (-0.55, 0.62)]],
    "bow": [[(0.0, 0.28), (-0.62, 0.6), (-0.62, -0.04)], [(0.0, 0.28), (0.62, 0.6), (0.62, -0.04)],
            [(-0.15, 0.14), (0.15, 0.14), (0.15, 0.42), (-0.15, 0.42)]],
}


# -- Backgrounds (64 x 64 x 3 float) --------------------------------------------------------------------------
def _supersampled(fn, res: int) -> np.ndarray:
    """Evaluate fn(x, y) -> bool on a 4x grid of pixel coordinates and average: antialiased (res, res)."""
    c = (np.arange(res * SS) + 0.5) / SS
    x, y = np.meshgrid(c, c)
    return fn(x, y).astype(np.float32).reshape(res, SS, res, SS).mean(axis=(1, 3))


def _mix(a, b, w: np.ndarray) -> np.ndarray:
    return np.asarray(a, np.float32) * (1 - w[..., None]) + np.asarray(b, np.float32) * w[..., None]


def background(name: str, rng: np.random.Generator, res: int = RESOLUTION) -> np.ndarray:
    """A background texture with a random phase: (res, res, 3) float in [0, 255]."""
    ph = rng.uniform(0, 10, size=2)
    if name in PLAIN_BACKGROUNDS:
        out = np.full((res, res, 3), PLAIN_BACKGROUNDS[name], np.float32)
        return out + rng.normal(0, 2.0, (res, res, 1))
    if name == "striped":
        w = _supersampled(lambda x, y: np.mod(x + y + ph[0], 10) < 5, res)
        return _mix((90, 90, 90), (200, 200, 200), w)
    if name == "dotted":
        w = _supersampled(lambda x, y: (np.mod(x + ph[0], 10) - 5) ** 2 + (np.mod(y + ph[1], 10) - 5) ** 2 < 5, res)
        return _mix((60, 60, 115), (235, 235, 235), w)
    if name == "checkered":
        w = _supersampled(lambda x, y: (np.floor((x + ph[0]) / 8) + np.floor((y + ph[1]) / 8)) % 2 == 0, res)
        return _mix((130, 95, 60), (205, 175, 130), w)
    if name == "grassy":
        blades = np.asarray(Image.fromarray(rng.normal(0, 1, (res // 4, res)).astype(np.float32), "F")
                            .resize((res, res), Image.Resampling.BILINEAR))
        return np.asarray((60, 135, 50), np.float32) + 24 * blades[..., None] * np.asarray((0.5, 1.0, 0.35))
    if name == "sandy":
        noise = rng.normal(0, 1, (res + 4, res + 4)).astype(np.float32)
        grain = sum(noise[dy:dy + res, dx:dx + res] for dy in range(5) for dx in range(5)) / 5.0  # 5x5 blur
        return np.asarray((215, 190, 140), np.float32) + 16 * grain[..., None]
    raise ValueError(f"unknown background {name!r}")


# -- Objects ------------------------------------------------------------------------------------------------
def _poly(points, centre: float, r: float) -> list[tuple[float, float]]:
    return [(centre + u * r, centre + v * r) for u, v in points]


def _star(n: int = 5, inner: float = 0.42) -> list[tuple[float, float]]:
    return [((1 if k % 2 == 0 else inner) * math.cos(-math.pi / 2 + k * math.pi / n),
             (1 if k % 2 == 0 else inner) * math.sin(-math.pi / 2 + k * math.pi / n)) for k in range(2 * n)]


def _heart() -> list[tuple[float, float]]:
    t = np.linspace(0, 2 * math.pi, 72, endpoint=False)
    x, y = 16 * np.sin(t) ** 3, 13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t)
    return list(zip(x / 17.0, -(y + 2.5) / 16.0))


def _ellipse(d: ImageDraw.ImageDraw, cx: float, cy: float, r: float, fill: int) -> None:
    d.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)


def shape_masks(cls: str, size: int, r: float, centre: float) -> tuple[Image.Image, Image.Image | None]:
    """Hard 'L' masks of the patterned body and (tree only) the trunk, in a size x size hi-res canvas."""
    body = Image.new("L", (size, size), 0)
    d = ImageDraw.Draw(body)
    trunk = None
    if cls == "ball":
        _ellipse(d, centre, centre, r, 255)
    elif cls == "box":
        d.rectangle((centre - 0.82 * r, centre - 0.82 * r, centre + 0.82 * r, centre + 0.82 * r), fill=255)
    elif cls == "star":
        d.polygon(_poly(_star(), centre, r), fill=255)
    elif cls == "heart":
        d.polygon(_poly(_heart(), centre, r), fill=255)
    elif cls == "ring":
        _ellipse(d, centre, centre, r, 255)
        _ellipse(d, centre, centre, 0.55 * r, 0)
    elif cls == "cup":
        d.polygon(_poly([(-0.72, -0.78), (0.42, -0.78), (0.28, 0.85), (-0.58, 0.85)], centre, r), fill=255)
        d.ellipse((centre + 0.15 * r, centre - 0.45 * r, centre + 0.95 * r, centre + 0.35 * r), outline=255,
                  width=max(1, int(0.2 * r)))
    elif cls == "moon":
        _ellipse(d, centre, centre, r, 255)
        _ellipse(d, centre + 0.45 * r, centre - 0.25 * r, 0.85 * r, 0)
    elif cls == "tree":
        d.polygon(_poly([(0.0, -1.0), (0.82, 0.45), (-0.82, 0.45)], centre, r), fill=255)
        trunk = Image.new("L", (size, size), 0)
        ImageDraw.Draw(trunk).rectangle((centre - 0.18 * r, centre + 0.45 * r, centre + 0.18 * r, centre + r),
                                        fill=255)
    else:
        raise ValueError(f"unknown class {cls!r}")
    return body, trunk


def _erode(mask: np.ndarray, k: int) -> np.ndarray:
    """Binary erosion by a (2k+1) square, separably: a pixel stays if its whole neighbourhood is set."""
    out = mask.copy()
    for axis in (0, 1):
        padded = np.pad(out, [(k, k) if a == axis else (0, 0) for a in (0, 1)])
        n = out.shape[axis]
        out = np.logical_and.reduce([np.take(padded, range(i, i + n), axis=axis) for i in range(2 * k + 1)])
    return out


def pattern_mask(cls: str, pattern: str, body: Image.Image, r: float, centre: float) -> Image.Image | None:
    """Where the second colour goes (a hard 'L' mask within the body), or None for a plain object."""
    if pattern == "plain":
        return None
    size = body.size[0]
    p = Image.new("L", (size, size), 0)
    d = ImageDraw.Draw(p)
    if pattern == "stripes":  # five horizontal bands, the 2nd and 4th in the second colour
        for k in (1, 3):
            d.rectangle((0, centre + (-1 + 0.4 * k) * r, size, centre + (-0.6 + 0.4 * k) * r), fill=255)
    elif pattern == "dots":
        for u, v in DOTS:
            _ellipse(d, centre + u * r, centre + v * r, DOT_RADIUS * r, 255)
    elif pattern == "spot":
        u, v = SPOT_CENTRE.get(cls, (0.0, 0.0))
        _ellipse(d, centre + u * r, centre + v * r, SPOT_RADIUS * r, 255)
    elif pattern == "rim":
        b = np.asarray(body) > 0
        return Image.fromarray(np.where(b & ~_erode(b, max(1, round(RIM_WIDTH * r))), 255, 0).astype(np.uint8))
    else:
        raise ValueError(f"unknown pattern {pattern!r}")
    return Image.fromarray(np.minimum(np.asarray(p), np.asarray(body)))


def accessory_mask(accessory: str, body: Image.Image, r: float, centre: float) -> Image.Image:
    """A hard 'L' mask of the accessory on the body's top, above its middle (a hat on a heart sits in its dip)."""
    b = np.asarray(body)[:, int(centre - 0.2 * r):int(centre + 0.2 * r) + 1] > 0
    top = float(np.argmax(b.any(axis=1)))  # the first body row in the middle band
    base = top + ACCESSORY_SINK * r
    mask = Image.new("L", body.size, 0)
    d = ImageDraw.Draw(mask)
    for polygon in ACCESSORY_SHAPES[accessory]:
        d.polygon([(centre + u * r, base - v * r) for u, v in polygon], fill=255)
    return mask


def sprite_size(scene: Scene, extent: float) -> int:
    """The sprite's canvas (px at 64 px scale): room for rotated corners, an accessory and a sub-pixel shift."""
    return int(math.ceil(extent * (1.75 if scene.accessory else 1.3))) + 2


def sprite(scene: Scene, extent: float, angle: float, offset: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    """The object as (colour (s, s, 3), alpha (s, s)) at 64 px scale, rotated by `angle` degrees and shifted by a
    sub-pixel `offset` within its box: each pixel the box filter of its SS x SS hi-res block, its colour the
    alpha-weighted mean of the layers seen there (the last layer drawn on top)."""
    s = sprite_size(scene, extent)
    size, r = s * SS, extent * SS / 2
    centre = size / 2
    body, trunk = shape_masks(scene.cls, size, r, centre)
    pat = pattern_mask(scene.cls, scene.pattern, body, r, centre)
    layers = [(body, COLOURS[scene.colour])]
    if pat is not None:
        layers.append((pat, COLOURS[scene.pattern_colour]))
    if trunk is not None:
        layers.append((trunk, TRUNK))
    if scene.accessory:
        layers.append((accessory_mask(scene.accessory, body, r, centre), COLOURS[scene.accessory_colour]))
    shift = (offset[0] * SS, offset[1] * SS)
    seen = np.zeros((size, size), np.intp)  # the layer each hi-res pixel shows: k for the k-th, 0 for none
    for k, (mask, _) in enumerate(layers, 1):  # the masks are hard (0 or 255), so are their NEAREST rotations
        m = mask.rotate(angle, resample=Image.Resampling.NEAREST, center=(centre, centre), translate=shift)
        seen[np.asarray(m) > 0] = k
    n = len(layers) + 1
    counts = np.bincount((_blocks(s) * n + seen).ravel(), minlength=s * s * n).reshape(s, s, n)  # (s, s, n)
    # exact integer sums over each block, then / SS^2 (a power of two): the premultiplied box filter, to the bit
    a = (counts[..., 1:].sum(-1) / SS**2).astype(np.float32)
    premultiplied = (counts[..., 1:] @ np.asarray([rgb for _, rgb in layers], np.float64) / SS**2).astype(np.float32)
    return premultiplied / np.maximum(a[..., None], 1e-6), a


@functools.lru_cache(maxsize=64)
def _blocks(s: int) -> np.ndarray:
    """(s*SS, s*SS): the index of the output pixel each hi-res pixel of an s x s sprite falls in."""
    i = np.arange(s * SS) // SS
    return i[:, None] * s + i[None, :]


def composite(canvas: np.ndarray, colour: np.ndarray, alpha: np.ndarray, top: int, left: int,
              coverage: np.ndarray | None = None) -> None:
    """Alpha-blend a sprite into the canvas in place, clipped at the borders; `coverage` collects the alpha."""
    h, w = canvas.shape[:2]
    s = alpha.shape[0]
    y0, x0, y1, x1 = max(top, 0), max(left, 0), min(top + s, h), min(left + s, w)
    if y1 <= y0 or x1 <= x0:
        return
    a = alpha[y0 - top:y1 - top, x0 - left:x1 - left, None]
    canvas[y0:y1, x0:x1] = canvas[y0:y1, x0:x1] * (1 - a) + colour[y0 - top:y1 - top, x0 - left:x1 - left] * a
    if coverage is not None:
        coverage[y0:y1, x0:x1] = np.maximum(coverage[y0:y1, x0:x1], a[..., 0])


def draw_object(canvas: np.ndarray, scene: Scene, cx: float, cy: float, extent: float, angle: float,
                coverage: np.ndarray | None = None) -> None:
    s = sprite_size(scene, extent)
    x, y = cx - s / 2, cy - s / 2
    colour, alpha = sprite(scene, extent, angle, (x - math.floor(x), y - math.floor(y)))
    composite(canvas, colour, alpha, math.floor(y), math.floor(x), coverage)


# -- Scenes and clips -------------------------------------------------------------------------------------
def render_with_alpha(scene: Scene, num_frames: int | None = None,
                      extra: list[tuple[Scene, np.ndarray]] = ()) -> tuple[np.ndarray, np.ndarray]:
    """uint8 frames (F, 64, 64, 3) and the objects' coverage (F, 64, 64) in [0, 1]: one frame for a still
    scene, NUM_FRAMES for a clip. `extra`: more objects, each with its own (F, 4) geometry, drawn on the same
    background; a scene's companion is drawn first, still."""
    frames = num_frames or (NUM_FRAMES if scene.motion else 1)
    objects = [(scene, geometry(scene, frames)), *extra]
    other = companion(scene)
    if other is not None:
        objects.insert(0, (other, geometry(other, 1)))  # drawn first: the object stands in front
    bg = background(scene.background, np.random.default_rng([scene.seed, 2]))
    out = np.empty((frames, RESOLUTION, RESOLUTION, 3), np.uint8)
    coverage = np.zeros((frames, RESOLUTION, RESOLUTION), np.float32)
    for f in range(frames):
        canvas = bg.copy()
        for obj, g in objects:
            draw_object(canvas, obj, *g[min(f, len(g) - 1)], coverage=coverage[f])
        out[f] = np.clip(np.rint(canvas), 0, 255).astype(np.uint8)
    return out, coverage


def render(scene: Scene, num_frames: int | None = None, extra: list[tuple[Scene, np.ndarray]] = ()) -> np.ndarray:
    """uint8 frames (F, 64, 64, 3) of a scene (see `render_with_alpha`)."""
    return render_with_alpha(scene, num_frames, extra)[0]


def to_images(frames: np.ndarray) -> list[Image.Image]:
    return [Image.fromarray(f) for f in frames]


def masks(scene: Scene, num_frames: int | None = None) -> list[Image.Image]:
    """Each frame's object mask, white on black: the control images of the world's mask ControlNet."""
    coverage = render_with_alpha(scene, num_frames)[1]  # (F, 64, 64) in [0, 1]
    return to_images(np.repeat((coverage[..., None] * 255).round().astype(np.uint8), 3, axis=-1))
