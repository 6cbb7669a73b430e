"""The miniature world's generator: deterministic, its words single SD1.5 tokens, its labels true to its pictures."""

import numpy as np
import pytest
from PIL import Image

from cdvideo.data.builtins import images_folder
from cdvideo.models.architectures import tokenizer_dir
from cdvideo.toyworld import draw, instances, world


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import CLIPTokenizer
    return CLIPTokenizer.from_pretrained(str(tokenizer_dir()))


def test_vocabulary_sizes_and_single_tokens(tokenizer):
    assert len(world.CLASSES) >= 8 and len(world.COLOURS) >= 8 and len(world.BACKGROUNDS) >= 8
    assert len(world.POSITIONS) == 5 and len(world.SIZES) == 2
    for word in (*world.CLASSES, *world.COLOURS, *world.ACCESSORIES, "wearing", "beside"):
        assert len(tokenizer(word, add_special_tokens=False).input_ids) == 1, word


def test_generator_is_deterministic_and_seeds_differ():
    a = [world.sample_scene(np.random.default_rng(7), clip=True) for _ in range(2)]
    assert a[0] == a[1]
    assert np.array_equal(draw.render(a[0]), draw.render(a[1]))
    b = world.sample_scene(np.random.default_rng(8), clip=True)
    assert not np.array_equal(draw.render(a[0]), draw.render(b))


def plain_sprite(scene, extent: float, angle: float, offset: tuple[float, float]):
    """The sprite drawn the plain way (as the world drew it until the integer box filter): each layer's rotated
    mask composited in float32 over the last, then the supersampled colour and alpha averaged over SS x SS blocks."""
    s = draw.sprite_size(scene, extent)
    size, r, ss = s * draw.SS, extent * draw.SS / 2, draw.SS
    body, trunk = draw.shape_masks(scene.cls, size, r, size / 2)
    layers = [(body, world.COLOURS[scene.colour]),
              (draw.pattern_mask(scene.cls, scene.pattern, body, r, size / 2), world.COLOURS.get(scene.pattern_colour)),
              (trunk, draw.TRUNK)]
    if scene.accessory:
        layers.append((draw.accessory_mask(scene.accessory, body, r, size / 2), world.COLOURS[scene.accessory_colour]))
    colour, alpha = np.zeros((size, size, 3), np.float32), np.zeros((size, size), np.float32)
    for mask, rgb in ((m, c) for m, c in layers if m is not None):
        m = np.asarray(mask.rotate(angle, resample=Image.Resampling.NEAREST, center=(size / 2, size / 2),
                                   translate=(offset[0] * ss, offset[1] * ss)), np.float32)[..., None] / 255.0
        colour = colour * (1 - m) + m * np.asarray(rgb, np.float32)
        alpha = np.maximum(alpha, m[..., 0])
    pool = lambda a: a.reshape(s, ss, s, ss, *a.shape[2:]).mean(axis=(1, 3))  # noqa: E731
    a = pool(alpha)
    return pool(colour * alpha[..., None]) / np.maximum(a[..., None], 1e-6), a


def test_sprites_are_the_plain_float_compositing_to_the_bit():
    """The renderer's box filter counts each layer's hi-res pixels in integers: every sprite (classes, patterns,
    accessories, sizes, angles, sub-pixel shifts) equals the plain float compositing bit for bit, so the world's
    pictures, and every build stage trained on them, stay what they were."""
    rng = np.random.default_rng(3)
    scenes = [world.sample_scene(rng, accessory_p=0.5) for _ in range(60)]
    assert {s.cls for s in scenes} == set(world.CLASSES) and {s.pattern for s in scenes} == set(world.PATTERNS)
    assert {s.accessory for s in scenes} == {None, *world.ACCESSORIES}
    for i, scene in enumerate(scenes):
        extent, angle, offset = (6.0, 13.7, 27.3)[i % 3], (0.0, 17.0, -33.5)[i // 3 % 3], (0.3 * (i % 4), 0.71)
        c, a = draw.sprite(scene, extent, angle, offset)
        c0, a0 = plain_sprite(scene, extent, angle, offset)
        assert c.dtype == c0.dtype == a.dtype == np.float32 and np.array_equal(a, a0) and np.array_equal(c, c0), scene


def test_clips_move_as_their_labels_say():
    rng = np.random.default_rng(0)
    base = world.Scene("box", "red", background="black", position="centre", size="small", seed=3)
    for motion, axis, sign in (("right", 0, 1), ("left", 0, -1), ("down", 1, 1), ("up", 1, -1)):
        frames = draw.render(world.with_motion(base, rng, motion))
        assert frames.shape == (world.NUM_FRAMES, 64, 64, 3)
        red = [(f[..., 0] > 150) & (f[..., 1] < 90) for f in frames]  # the red object's pixels
        centres = [np.argwhere(m).mean(axis=0)[::-1] for m in red]  # (x, y)
        assert sign * (centres[-1][axis] - centres[0][axis]) > 25, motion
    grow = draw.render(world.with_motion(base, rng, "growing"))
    assert ((grow[-1, ..., 0] > 150) & (grow[-1, ..., 1] < 90)).sum() > 4 * ((grow[0, ..., 0] > 150)
                                                                              & (grow[0, ..., 1] < 90)).sum()
    with pytest.raises(ValueError, match="spinning"):
        world.with_motion(world.Scene("ball", "red"), rng, "spinning")


def test_a_clips_progress_is_how_far_it_moves_the_way_its_word_asks():
    """`motions.progress` on the generator's own tracks: a clip moves its own way (about 36 px along the frame, a
    size change about 1 in log extent), the opposite word reads the same distance the other way, and played
    backwards the clip is its opposite motion's."""
    from cdvideo.toyworld import motions

    rng = np.random.default_rng(1)
    base = world.Scene("star", "pink", background="gray", position="centre", size="big", seed=7)
    for motion in motions.AXIS:
        scene = world.with_motion(base, rng, motion)
        track, back = motions.true_track(scene), motions.true_track(world.played_backwards(scene))
        own, other = motions.progress(track, motion), motions.progress(track, world.BACKWARDS[motion])
        assert (30 < own < 42) if motion in ("left", "right", "up", "down") else (0.8 < own < 1.2), motion
        assert other == pytest.approx(-own) and np.allclose(back, track[::-1]), motion


def test_a_short_sweep_starts_about_the_centre_whichever_way_it_goes():
    """A translation along a "short" sweep starts within 3 px of the centre and moves 17-21 px the asked way; the
    same scene moving either way starts at the same point, so its first frame does not tell the direction (across
    the frame, it does: from the side it leaves); a "middle" size change starts at one extent either way, and so
    does a "sizes" one, whose translations stay across the frame."""
    from cdvideo.toyworld import motions

    rng = np.random.default_rng(2)
    for seed in range(6):
        base = world.Scene("heart", "green", background="black", position="centre", size="small", seed=seed)
        for motion in world.TRANSLATIONS:
            short = world.with_sweep(world.with_motion(base, rng, motion), "short")
            track = motions.true_track(short) * 64  # (F, 3) px
            axis, _ = motions.AXIS[motion]
            opposite = motions.true_track(world.with_sweep(world.with_motion(base, rng, world.BACKWARDS[motion]),
                                                           "short")) * 64
            assert abs(track[0, axis] - 32) <= 3 and track[0, axis] == pytest.approx(opposite[0, axis]), motion
            assert 17 <= motions.progress(track / 64, motion) <= 21, motion
            across = motions.true_track(world.with_motion(base, rng, motion)) * 64
            assert abs(across[0, axis] - 32) > 14, motion  # starts on the side it leaves
    grow = world.with_motion(base, rng, "growing")
    assert world.with_sweep(grow, "short") == grow  # a short sweep is a translation's
    for motion in world.SIZE_CHANGES:  # "middle": a size change too, from the middle extent, 1.5 times either way
        moving = world.with_motion(base, rng, motion)
        middle = motions.true_track(world.with_sweep(moving, "middle"))
        other = motions.true_track(world.with_sweep(world.with_motion(base, rng, world.BACKWARDS[motion]), "middle"))
        assert middle[0, 2] == pytest.approx(other[0, 2]) and motions.progress(middle, motion) == pytest.approx(
            np.log(1.5), abs=0.02), motion
        assert np.allclose(motions.true_track(world.with_sweep(moving, "sizes")), middle), motion
    left = world.with_motion(base, rng, "left")
    assert world.with_sweep(left, "sizes") == left  # "sizes": translations across the frame, as drawn before
    with pytest.raises(ValueError, match="sweep"):
        world.played_backwards(world.with_sweep(world.with_motion(base, rng, "left"), "short"))
    with pytest.raises(ValueError, match="no sweep"):
        world.with_sweep(base, "long")


def test_captions_name_what_the_scene_holds():
    rng = np.random.default_rng(1)
    scene = world.Scene("star", "blue", "dots", "white", "striped", "left", "small", "right", seed=1)
    seen = set()
    for _ in range(200):
        text, mentioned = world.describe(scene, rng)
        assert "star" in text and mentioned["cls"] == "star"
        for key, value in mentioned.items():
            if value is not None and key in ("colour", "background"):
                assert value in text
        seen.add(text)
    assert len(seen) > 20  # several phrasings
    assert world.prompt("a red ball", "left", "green") == "a red ball on the left on a green background"


def test_a_pattern_is_named_without_its_body_colour_only_when_asked():
    """The build's captions name a pattern only after the body colour; `pattern_alone` (a UNet trial's) names it
    in captions that leave the colour out ("a star with white dots"), and at 0 the captions are the build's."""
    scene = world.Scene("star", "blue", "dots", "white", "gray")
    build = [world.describe(scene, np.random.default_rng(s)) for s in range(300)]
    assert [world.describe(scene, np.random.default_rng(s), pattern_alone=0.0) for s in range(300)] == build
    assert not any(m["pattern"] and not m["colour"] for _, m in build)
    alone = [world.describe(scene, np.random.default_rng(s), pattern_alone=1.0) for s in range(300)]
    colourless = [(t, m) for t, m in alone if not m["colour"]]
    assert colourless and all(m["pattern"] == "dots" and "with white dots" in t for t, m in colourless)


def test_instances_never_occur_in_pretraining_and_photos_are_the_generators():
    rng = np.random.default_rng(2)
    banned = instances.excluded()
    assert len(instances.INSTANCES) >= 6 and sum(i.held_out for i in instances.INSTANCES.values()) == 2
    mixes = ({}, {"accessory_p": 0.5, "companion_p": 0.5})  # alone or with anything
    assert not any(world.sample_scene(rng, exclude=banned, **mix).appearance in banned
                   for mix in mixes for _ in range(3000))
    for inst in instances.INSTANCES.values():
        folder = images_folder(f"toyworld:{inst.name}")
        files = sorted(folder.glob("*.png"))
        assert len(files) == instances.PHOTOS
        scenes = instances.photo_scenes(inst)
        assert len({s.background for s in scenes}) == instances.PHOTOS
        for path, scene in zip(files, scenes):
            assert np.array_equal(np.asarray(Image.open(path).convert("RGB")), draw.render(scene)[0]), path


def _pixels(frame: np.ndarray, rgb) -> np.ndarray:
    """(N, 2) y, x of the pixels within 30 of a colour."""
    return np.argwhere(np.abs(frame.astype(int) - np.asarray(rgb)).max(axis=-1) < 30)


def test_accessories_sit_on_top_and_companions_stand_on_the_other_side():
    rng = np.random.default_rng(4)
    ball = world.Scene("ball", "blue", background="black", position="centre", size="big", seed=5)
    assert len(_pixels(draw.render(ball)[0], world.COLOURS["red"])) == 0
    for accessory in world.ACCESSORIES:
        frame = draw.render(world.with_accessory(ball, rng, accessory, "red"))[0]
        worn, body = _pixels(frame, world.COLOURS["red"]), _pixels(frame, world.COLOURS["blue"])
        assert len(worn) > 60, accessory  # a readable patch at 64 px
        assert worn[:, 0].mean() < body[:, 0].min() + 6, accessory  # on the top of the ball
        assert abs(worn[:, 1].mean() - body[:, 1].mean()) < 3, accessory  # above its middle
    for relation, sign in (("left", 1), ("right", -1)):
        scene = world.with_companion(ball, rng, "star", "yellow", relation)
        frame = draw.render(scene)[0]
        body, other = _pixels(frame, world.COLOURS["blue"]), _pixels(frame, world.COLOURS["yellow"])
        assert sign * (other[:, 1].mean() - body[:, 1].mean()) > 20  # the companion on the other side
        assert len(body) > 2 * len(other)  # the object big, the companion small
        assert world.companion(scene).pattern == "plain" and world.companion(scene).size == "small"


def test_clips_with_an_accessory_or_a_companion_keep_them_in_view():
    rng = np.random.default_rng(5)
    for _ in range(300):
        scene = world.sample_scene(rng, clip=True, accessory_p=0.5, companion_p=0.5)
        if scene.other:
            assert scene.motion in world.COMPANION_MOTIONS and scene.position == scene.relation
        if scene.accessory:
            assert scene.motion not in ("up", "growing", "shrinking") and scene.position != "top"
    with pytest.raises(ValueError, match="beside another object"):
        world.with_motion(world.with_companion(world.Scene("ball", "red"), rng), rng, "left")


def test_captions_name_the_accessory_and_the_companion():
    rng = np.random.default_rng(6)
    scene = world.with_companion(world.with_accessory(world.Scene("box", "pink", seed=2), rng, "crown", "white"),
                                 rng, "moon", "green", "right")
    kinds = set()
    for _ in range(300):
        text, mentioned = world.describe(scene, rng)
        assert mentioned["position"] is None  # the relation places the object
        if mentioned["accessory"]:
            assert "wearing a" in text and "crown" in text
        if mentioned["other"]:
            words = "to the right of" if mentioned["relation"] else ("next to", "beside")
            assert any(f"{w} a" in text for w in ([words] if isinstance(words, str) else words)) and "moon" in text
            kinds.add(mentioned["relation"])
        if mentioned["accessory_colour"]:
            assert "white crown" in text
    assert kinds == {"right", None}  # both the side and "next to" / "beside"


def test_spelled_out_clips_name_a_size_only_where_the_world_would():
    """The ceiling's clip prompts name the instance big, as the stills do, except where the clip grows or shrinks:
    no caption of the world names the size of an object changing size."""
    from cdvideo.toyworld.scoring import spelled_prompts

    rng = np.random.default_rng(0)
    for motion in world.SIZE_CHANGES:
        scene = world.with_motion(world.sample_scene(rng), rng, motion)
        assert all(m["size"] is None for m in (world.describe(scene, rng, keep=1.0)[1] for _ in range(20)))
    for inst in instances.INSTANCES.values():
        prompts = spelled_prompts(inst, 12, clips=True)
        for p in prompts:
            sized = any(w in p.text.split() for words in world.SIZE_WORDS.values() for w in words)
            assert sized == (p.asked["motion"] not in world.SIZE_CHANGES), p.text
            article, word = p.text.split()[:2]
            assert inst.describe() in p.text and article == ("an" if word[0] in "aeiou" else "a"), p.text
        assert {p.asked["motion"] for p in prompts} >= set(world.SIZE_CHANGES)


def test_evaluation_prompts_ask_what_their_words_say():
    """Every evaluation sample of every instance asks exactly what the scorer reads from its words (so that a
    model drawing the words scores it), each kind is there, the accessory and second object among them; and the
    world's captions read back the same way."""
    from cdvideo.toyworld.scoring import KINDS, asked_in, eval_set

    for inst in instances.INSTANCES.values():
        samples = eval_set(inst.colour, f"sks {inst.cls}", 1, 1)
        assert {s.kind for s in samples} == set(KINDS)
        for s in samples:
            read = {k: v for k, v in asked_in(s.text).items() if v is not None}
            if s.kind == "property":  # the colour change is the subject's own word, not a composed attribute
                assert read == {}, s
            else:
                assert {k: v for k, v in read.items() if k != "background"} == {
                    k: v for k, v in s.asked.items() if k != "background"}, s
            if s.kind == "companion":
                assert s.asked["other"] != inst.cls
    rng = np.random.default_rng(3)
    for _ in range(200):
        scene = world.with_companion(world.with_accessory(world.sample_scene(rng), rng), rng)
        text, mentioned = world.describe(scene, rng)
        read = asked_in(text)
        for key in ("accessory", "accessory_colour", "other", "other_colour", "relation", "background"):
            assert read.get(key) == mentioned[key], (text, key)
