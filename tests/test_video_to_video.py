"""`cdvideo animate --video CLIP --strength S`: the subject's weights through diffusers'
AnimateDiffVideoToVideoPipeline. The source is normalised to the clip (frames at --fps, --num-frames, the clip's
size), the sidecar records it with its sha256 and regenerates the same bytes, and the frames are diffusers' own on
the same inputs."""

import json
import re
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import ROOT, source_gif
from PIL import Image, ImageSequence

from cdvideo.apps.cli import main
from cdvideo.data.references import read_clip
from cdvideo.pipelines.personalized import load_personalized
from cdvideo.pipelines.registry import load_adapter, make_scheduler

FAST = ["--height", "64", "--width", "64", "--num-inference-steps", "4", "--seed", "7"]


def frames_of(folder):
    return np.stack([np.asarray(Image.open(p)) for p in sorted(folder.glob("*.png"))])


def line(err: str) -> str:
    [first] = [x for x in err.splitlines() if x.startswith("error:")]
    assert "Traceback" not in err
    return first


def test_every_format_and_a_sidecar_that_regenerates_the_clip_and_refuses_a_changed_source(tmp_path, capsys,
                                                                                          perturbed_weights):
    src, out = source_gif(tmp_path / "src.gif"), tmp_path / "out"
    assert main(["animate", "--weights", str(perturbed_weights), "--video", str(src), "--strength", "0.5",
                 "--prompt", "a sks dog", "--format", "mp4,gif,webp,png", "--output-dir", str(out), *FAST]) == 0
    stem = out / "a_sks_dog_s7"
    assert sorted(p.name for p in out.iterdir()) == [f"{stem.name}{s}" for s in (".gif", ".json", ".mp4", ".webp",
                                                                                 "_frames")]
    frames = frames_of(out / f"{stem.name}_frames")
    assert frames.shape == (16, 64, 64, 3)  # 6 frames of 80 x 48 read as 16 at the clip's 64 x 64
    sidecar = json.loads(stem.with_suffix(".json").read_text())
    assert sidecar["video"] == str(src.resolve()) and len(sidecar["video_sha256"]) == 64
    assert sidecar["strength"] == 0.5 and sidecar["num_frames"] == 16
    assert main(["animate", "--sidecar", str(stem.with_suffix(".json")), "--output-dir", str(tmp_path / "again")]) == 0
    assert (tmp_path / "again" / "a_sks_dog_s7.mp4").read_bytes() == stem.with_suffix(".mp4").read_bytes()
    capsys.readouterr()
    source_gif(src, frames=7)  # the source changed since
    assert main(["animate", "--sidecar", str(stem.with_suffix(".json")), "--output-dir", str(tmp_path / "x")]) == 2
    assert re.search(r"source video .*src.gif is missing or changed", line(capsys.readouterr().err))


@torch.no_grad()
def test_the_clip_is_diffusers_own_and_lower_strength_keeps_more_of_the_source(tmp_path, perturbed_weights):
    """The same frames as AnimateDiffVideoToVideoPipeline built by hand on the same components, source frames, seed
    and settings; at strength 0.25 the clip stays closer to its source than at 1.0."""
    from diffusers import AnimateDiffVideoToVideoPipeline

    src = source_gif(tmp_path / "src.gif")
    clips = {}
    for strength in (0.25, 1.0):
        out = tmp_path / f"s{strength}"
        assert main(["animate", "--weights", str(perturbed_weights), "--video", str(src), "--strength",
                     str(strength), "--prompt", "a sks dog", "--format", "png", "--output-dir", str(out), *FAST]) == 0
        clips[strength] = frames_of(out / "a_sks_dog_s7_frames").astype(np.float32)
    m, _, _ = load_personalized(None, [str(perturbed_weights)])
    pipe = AnimateDiffVideoToVideoPipeline(
        vae=m["vae"], text_encoder=m["text_encoder"], tokenizer=m["tokenizer"], unet=m["unet"],
        motion_adapter=load_adapter("tiny", torch.float32),
        scheduler=make_scheduler("ddim", m["scheduler"].config, animatediff=True))
    pipe.vae.enable_slicing()
    video = [Image.fromarray(f) for f in read_clip(src, 16, 8, 64, 64)]
    plain = pipe(video=video, prompt="a sks dog", strength=0.25, height=64, width=64, num_inference_steps=4,
                 generator=torch.Generator("cpu").manual_seed(7), output_type="np").frames[0]
    assert np.abs(np.round(plain * 255) - clips[0.25]).max() <= 1  # uint8 rounding
    source = read_clip(src, 16, 8, 64, 64).astype(np.float32)
    assert np.abs(clips[0.25] - source).mean() < np.abs(clips[1.0] - source).mean()


def test_a_motion_lora_and_freenoise_go_with_a_source(tmp_path):
    """The miniature world, a 24-frame clip (FreeNoise) from a 16-frame source, with a motion LoRA."""
    src = tmp_path / "frames"  # a folder of frames, 8 of them
    src.mkdir()
    with Image.open(source_gif(tmp_path / "src.gif", frames=8)) as gif:
        for i, frame in enumerate(ImageSequence.Iterator(gif)):
            frame.convert("RGB").save(src / f"{i:02d}.png")
    lora = ROOT / "tests" / "fixtures" / "motion" / "circling_temporal_600.safetensors"
    out = tmp_path / "out"
    assert main(["animate", "--model", "toyworld", "--video", str(src), "--strength", "0.7", "--motion-lora",
                 f"{lora}:0.8", "--num-frames", "24", "--prompt", "a red ball", "--num-inference-steps", "3",
                 "--format", "png", "--output-dir", str(out)]) == 0
    assert frames_of(out / "a_red_ball_s42_frames").shape == (24, 64, 64, 3)
    sidecar = json.loads((out / "a_red_ball_s42.json").read_text())
    assert sidecar["free_noise"] and sidecar["motion_loras"][0]["scale"] == 0.8 and sidecar["video"]


@pytest.mark.parametrize("make, args, message", [
    (lambda p: p / "missing.mp4", [], r"source video .*missing.mp4 not found"),
    (lambda p: (p / "empty").mkdir() or p / "empty", [], r"empty: 0 frame image\(s\)"),
    (lambda p: Image.new("RGB", (64, 64)).save(p / "still.png") or p / "still.png", [],
     "a still image shows no motion"),
    (lambda p: source_gif(p / "s.gif"), ["--strength", "0.1"], r"strength 0.1 of 4 steps runs no denoising step"),
    (None, ["--strength", "0.5"], "--strength is for video-to-video: give the source clip with --video"),
])
def test_bad_sources_are_one_line_and_render_nothing(tmp_path, capsys, perturbed_weights, make, args, message):
    source = ["--video", str(make(tmp_path))] if make else []
    out = tmp_path / "out"
    assert main(["animate", "--weights", str(perturbed_weights), *source, *args, "--prompt", "a sks dog",
                 "--output-dir", str(out), *FAST]) == 2
    assert re.search(message, line(capsys.readouterr().err))
    assert not out.exists() or not any(out.iterdir())


def test_the_animate_tab_restyles_a_dropped_clip_and_keeps_it_for_the_sidecar(tmp_path, perturbed_weights):
    """The web app's Render with a source clip: checked as the Motion tab's clips are, kept in the user's folder
    under its sha256, rendered at the chosen strength; a dropped file that is no clip is one line."""
    from conftest import release_openmp_team

    from cdvideo.apps.ui import actions
    from cdvideo.apps.ui.access import Access
    from cdvideo.apps.ui.jobs import JobManager
    from cdvideo.errors import CdvideoError

    release_openmp_team()  # as served: the jobs' threads hold the only OpenMP team
    mgr, me = JobManager(tmp_path / "ui"), Access(tmp_path / "ui").client("tab", None)
    src = source_gif(tmp_path / "dropped.gif")
    try:
        job = actions.start_render(mgr, me, None, "a sks dog", 8, 64, 4, 5.0, "1", "", 1.0, "tiny",
                                   uploaded=str(perturbed_weights), source=str(src), strength=0.5)
        deadline = time.time() + 120
        while job.active and time.time() < deadline:
            time.sleep(0.05)
        assert job.status == "done", job.message
        sidecar = json.loads(next(p for p in map(Path, job.files) if p.suffix == ".json").read_text())
        kept = Path(sidecar["video"])
        assert kept.parent == me.folder / "sources" and kept.read_bytes() == src.read_bytes()
        assert sidecar["strength"] == 0.5 and sidecar["num_frames"] == 8
        (tmp_path / "notes.txt").write_text("hello")
        with pytest.raises(CdvideoError, match="notes.txt: not a clip"):
            actions.start_render(mgr, me, None, "a sks dog", 8, 64, 4, 5.0, "1", "", 1.0, "tiny",
                                 uploaded=str(perturbed_weights), source=str(tmp_path / "notes.txt"))
    finally:
        mgr.shutdown(timeout=60)
