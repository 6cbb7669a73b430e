"""Subjects as people have them: a phone video, huge or animated images; and outputs that never collide."""

import json
import multiprocessing
import os

import numpy as np
import pytest
from conftest import tiny_overrides
from PIL import Image
from same_name_writer import render_same_name

from cdvideo.apps.cli import main
from cdvideo.data.photos import MAX_SIDE, load_folder
from cdvideo.data.video import frames_from_video, select_frames
from cdvideo.errors import CdvideoError


def scene(seed: int, blur: bool = False) -> np.ndarray:
    """A distinct 128 px frame: a coloured square on a textured ground, optionally box-blurred."""
    rng = np.random.default_rng(seed)
    img = (rng.random((128, 128, 3)) * 60 + 60).astype(np.float64)
    x, y = rng.integers(10, 70, size=2)
    img[y:y + 48, x:x + 48] = rng.integers(0, 256, size=3)
    if blur:
        k = 9
        pad = np.pad(img, ((k, k), (k, k), (0, 0)), mode="edge")
        img = sum(pad[dy:dy + 128, dx:dx + 128] for dy in range(0, 2 * k + 1, 3) for dx in range(0, 2 * k + 1, 3))
        img /= (len(range(0, 2 * k + 1, 3)) ** 2)
    return img.clip(0, 255).astype(np.uint8)


def test_frame_selection_picks_sharp_distinct_frames():
    # four scenes, each repeated 5 times sharp, plus blurred versions of two other scenes
    frames = [scene(s) for s in (1, 2, 3, 4) for _ in range(5)]
    frames += [scene(s, blur=True) for s in (5, 6) for _ in range(3)]
    picks = select_frames(frames, n=6)
    assert all(p < 20 for p in picks)  # no blurred frame
    assert sorted({p // 5 for p in picks}) == [0, 1, 2, 3]  # every distinct scene, each once
    assert len(picks) == 4  # repeats of a scene are not distinct frames


def write_video(path, frames, fps=8):
    import imageio.v2 as imageio

    with imageio.get_writer(str(path), fps=fps, codec="libx264", macro_block_size=16, quality=9) as w:
        for f in frames:
            w.append_data(f)


def test_a_video_is_a_subject(tmp_path, capsys):
    frames = [scene(s) for s in range(6) for _ in range(4)] + [scene(9, blur=True)] * 4
    write_video(tmp_path / "rex.mp4", frames)
    picked = frames_from_video(tmp_path / "rex.mp4", n=5)
    assert len(picked) == 5 and picked[0].size == (128, 128)
    out = tmp_path / "run"
    assert main(["train", *tiny_overrides(out, tmp_path / "rex.mp4", "max_steps=1", "concepts.0.video_frames=4")]) == 0
    assert len(list((out / "subject_frames" / "sks").glob("*.png"))) == 4
    masked = ["train", *tiny_overrides(tmp_path / "masked", tmp_path / "rex.mp4", "max_steps=1",
                                       f"concepts.0.masks={tmp_path}")]
    assert main(masked) == 2 and "subject masks go with a folder of photos, not a video" in capsys.readouterr().err
    assert not (tmp_path / "masked").exists()

    write_video(tmp_path / "still.mp4", [scene(1)] * 16)
    with pytest.raises(CdvideoError, match="only 1 sharp, distinct frames"):
        frames_from_video(tmp_path / "still.mp4")


def test_huge_animated_and_phone_sized_photos(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    Image.fromarray(scene(1)).resize((3000, 2000)).save(folder / "big.jpg", quality=80)  # a 6 MP photo
    frames = [Image.fromarray(scene(s)) for s in (2, 3)]
    frames[0].save(folder / "anim.gif", save_all=True, append_images=frames[1:], duration=100)
    gif, jpg = load_folder(folder)  # sorted by name
    assert gif.size == (128, 128) and max(jpg.size) == MAX_SIDE  # the GIF's first frame; the photo downscaled

    bomb = tmp_path / "bomb"
    bomb.mkdir()
    Image.MAX_IMAGE_PIXELS, limit = 1_000_000, Image.MAX_IMAGE_PIXELS  # a 240 MP scan, scaled down for the test
    try:
        Image.new("RGB", (1600, 1600)).save(bomb / "scan.png")
        with pytest.raises(CdvideoError, match="scan.png.*beyond PIL's safety limit"):
            load_folder(bomb)
    finally:
        Image.MAX_IMAGE_PIXELS = limit


def test_concurrent_renders_of_the_same_prompt_and_seed_keep_every_file(tmp_path):
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        results = pool.map(render_same_name, [(tmp_path, k) for k in range(8)])
    gifs = sorted(p for r in results for p in r if p.endswith(".gif"))
    assert len(set(gifs)) == 8 and all(os.path.exists(p) for p in gifs)
    writers = {json.loads(open(p.replace(".gif", ".json")).read())["writer"] for p in gifs}
    assert writers == set(range(8))  # each sidecar belongs to its own clip
