"""Reference clips of a motion: every container people have, normalised; bad ones refused in one line before a run
folder exists."""


import numpy as np
import pytest
from PIL import Image

from cdvideo.data.references import read_reference, read_references
from cdvideo.errors import CdvideoError


def gif(path, frames: int, size=(64, 64)):
    ims = [Image.new("RGB", size, (20 * k % 255, 40, 200)) for k in range(frames)]
    ims[0].save(path, save_all=True, append_images=ims[1:], duration=125, loop=0)
    return path


def mp4(path, frames: int, width: int, height: int, fps: int = 8):
    import imageio_ffmpeg

    w = imageio_ffmpeg.write_frames(str(path), (width, height), fps=fps, macro_block_size=1,
                                    output_params=["-preset", "ultrafast"])
    w.send(None)
    for k in range(frames):
        frame = np.zeros((height, width, 3), np.uint8)
        frame[:, (k * width // frames):(k * width // frames) + width // 8] = 255  # a bar moving right
        w.send(frame.tobytes())
    w.close()
    return path


def test_clips_of_every_kind_and_size_are_normalised_to_the_same_shape(tmp_path):
    folder = tmp_path / "frames"
    folder.mkdir()
    for k in range(10):
        Image.new("RGB", (120, 100), (k * 20, 0, 0)).save(folder / f"{k:02d}.png")
    clips = read_references([str(gif(tmp_path / "a.gif", 20, (80, 60))), str(folder),
                             str(mp4(tmp_path / "b.mp4", 24, 96, 64))], num_frames=16, fps=8, size=64)
    assert [c.shape for c in clips] == [(16, 64, 64, 3)] * 3 and all(c.dtype == np.uint8 for c in clips)
    bar = clips[2][:, 32, :, 0].argmax(axis=1)  # the mp4's bar, seen moving right over the 16 frames
    assert bar[-1] > bar[0] and np.all(np.diff(bar) >= 0)
    short = read_reference(gif(tmp_path / "short.gif", 6), num_frames=16, fps=8, size=64)  # spread over 6 frames
    assert short.shape == (16, 64, 64, 3)
    assert len({int(f[0, 0, 0]) for f in short}) == 6  # every source frame used, none invented


def test_a_4k_clip_is_decoded_at_the_training_size(tmp_path):
    clip = read_reference(mp4(tmp_path / "uhd.mp4", 5, 3840, 2160, fps=25), num_frames=4, fps=25, size=64)
    assert clip.shape == (4, 64, 64, 3)


@pytest.mark.parametrize("make, message", [
    (lambda p: Image.new("RGB", (64, 64)).save(p / "still.png") or p / "still.png", "a still image shows no motion"),
    (lambda p: gif(p / "two.gif", 2), "2 frame.*at least 4"),
    (lambda p: ((p / "broken.mp4").write_bytes(b"\x00" * 2048), p / "broken.mp4")[1], "not a readable video"),
    (lambda p: (p / "empty").mkdir() or p / "empty", "0 frame image"),
    (lambda p: p / "missing.mov", "not found"),
])
def test_bad_reference_clips_give_one_line_errors(tmp_path, make, message):
    with pytest.raises(CdvideoError, match=message) as e:
        read_reference(make(tmp_path), num_frames=16, fps=8, size=64)
    assert "\n" not in str(e.value)


def test_train_motion_refuses_a_bad_clip_before_writing_anything(tmp_path, capsys):
    from cdvideo.apps.cli import main

    Image.new("RGB", (64, 64)).save(tmp_path / "still.png")
    out = tmp_path / "run"
    assert main(["train-motion", "--config", "configs/motion/toyworld_circling.yaml",
                 f"references=[{tmp_path / 'still.png'}]", f"output_dir={out}"]) == 2
    err = capsys.readouterr().err
    assert "a still image shows no motion" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1 and not out.exists()
