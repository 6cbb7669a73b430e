"""`cdvideo animate --controlnet NET --control-video CLIP`: the subject's weights through diffusers'
AnimateDiffControlNetPipeline (and its video-to-video twin), one or several ControlNets, condition frames given or
drawn with OpenCV's Canny; the sidecar records every file and regenerates the clip; a ControlNet that does not fit
the base, or is damaged, is one line before anything renders."""

import json
import re
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image
from conftest import source_gif
from test_video_to_video import FAST, frames_of, line

from cdvideo.apps.cli import main
from cdvideo.data.references import read_clip
from cdvideo.models import architectures as tiny
from cdvideo.pipelines.personalized import load_personalized
from cdvideo.pipelines.registry import load_adapter, make_scheduler


def animate(tmp_path, weights, *args) -> int:
    return main(["animate", "--weights", str(weights), "--prompt", "a sks dog", "--output-dir", str(tmp_path / "out"),
                 *FAST, *args])


def diffusers_pipeline(cls, weights, **extra):
    """diffusers' AnimateDiff pipeline `cls` over the tiny base with `weights`, built by hand as its docs do, with
    cdvideo's scheduler settings and VAE slicing: what each conditioned render is compared with."""
    m, _, _ = load_personalized(None, [str(weights)])
    pipe = cls(vae=m["vae"], text_encoder=m["text_encoder"], tokenizer=m["tokenizer"], unet=m["unet"],
               motion_adapter=load_adapter("tiny", torch.float32),
               scheduler=make_scheduler("ddim", m["scheduler"].config, animatediff=True), **extra)
    pipe.vae.enable_slicing()
    return pipe


@torch.no_grad()
def test_canny_conditioned_clip_is_diffusers_own_and_its_sidecar_regenerates_it(tmp_path, capsys, controlnet,
                                                                                perturbed_weights):
    from diffusers import AnimateDiffControlNetPipeline, ControlNetModel

    src = source_gif(tmp_path / "plain.gif")
    assert animate(tmp_path, perturbed_weights, "--controlnet", str(controlnet), "--control-video", str(src),
                   "--control-preprocess", "canny", "--control-scale", "0.8", "--format", "gif,png") == 0
    mine = frames_of(tmp_path / "out" / "a_sks_dog_s7_frames")
    pipe = diffusers_pipeline(AnimateDiffControlNetPipeline, perturbed_weights,
                              controlnet=ControlNetModel.from_pretrained(controlnet))
    edges = [Image.fromarray(np.repeat(cv2.Canny(cv2.cvtColor(f, cv2.COLOR_RGB2GRAY), 100, 200)[:, :, None], 3, 2))
             for f in read_clip(src, 16, 8, 64, 64)]
    plain = pipe("a sks dog", num_frames=16, conditioning_frames=edges, controlnet_conditioning_scale=0.8,
                 height=64, width=64, num_inference_steps=4, generator=torch.Generator("cpu").manual_seed(7),
                 output_type="np").frames[0]
    assert np.abs(np.round(plain * 255) - mine).max() <= 1
    sidecar = tmp_path / "out" / "a_sks_dog_s7.json"
    record = json.loads(sidecar.read_text())
    assert [(n["scale"], n["preprocess"]) for n in record["controlnets"]] == [(0.8, "canny")]
    assert record["control_videos"][0]["path"] == str(src.resolve())
    assert main(["animate", "--sidecar", str(sidecar), "--format", "gif", "--output-dir", str(tmp_path / "b")]) == 0
    assert (tmp_path / "b" / "a_sks_dog_s7.gif").read_bytes() == sidecar.with_suffix(".gif").read_bytes()
    source_gif(src, frames=5)
    capsys.readouterr()
    assert main(["animate", "--sidecar", str(sidecar), "--output-dir", str(tmp_path / "c")]) == 2
    assert "plain.gif is missing or changed" in line(capsys.readouterr().err)


def test_two_controlnets_at_once_with_a_source_video(tmp_path, controlnet, perturbed_weights):
    """Several ControlNets as diffusers allows (MultiControlNetModel), each with its clip and scale, in the
    video-to-video ControlNet pipeline; the control clips of another length and size are normalised."""
    a, b = source_gif(tmp_path / "a.gif"), source_gif(tmp_path / "b.gif", frames=9, size=(40, 72))
    assert animate(tmp_path, perturbed_weights, "--controlnet", str(controlnet), "--controlnet", str(controlnet),
                   "--control-video", str(a), "--control-video", str(b), "--control-scale", "0.5",
                   "--video", str(a), "--strength", "0.75", "--format", "png") == 0
    assert frames_of(tmp_path / "out" / "a_sks_dog_s7_frames").shape == (16, 64, 64, 3)
    record = json.loads((tmp_path / "out" / "a_sks_dog_s7.json").read_text())
    assert [n["scale"] for n in record["controlnets"]] == [0.5, 1.0] and len(record["control_videos"]) == 2
    assert record["video"] == str(a.resolve())


@pytest.fixture(scope="module")
def other_base_controlnet(tmp_path_factory):
    """A ControlNet of the miniature world's UNet: another shape than the tiny base's."""
    from diffusers import ControlNetModel

    from cdvideo.models.loading import load_components

    folder = tmp_path_factory.mktemp("cn") / "world-controlnet"
    ControlNetModel.from_unet(load_components("toyworld")["unet"]).save_pretrained(folder)
    return folder


def damaged(folder, tmp_path):
    import shutil

    copy = shutil.copytree(folder, tmp_path / "damaged")
    weights = copy / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    return copy


@pytest.mark.parametrize("case, message", [
    ("other base", r"ControlNet .*world-controlnet was made for another base than tiny \(cross_attention_dim"),
    ("damaged", r"ControlNet .*damaged: cannot be read"),
    ("missing", r"ControlNet .*nowhere: no such folder or file"),
    ("bundled, not built", r"ControlNet toyworld:depth: not in this installation \(.*controlnet_depth is missing\)"),
    ("bundled, a path", r"ControlNet toyworld:\.\./\.\./x: '\.\./\.\./x' is not a condition name of toyworld"),
    ("no frames", r"empty: 0 frame image\(s\)"),
    ("two nets, one clip", r"give one --control-video per --controlnet \(2 ControlNet\(s\), 1 control video\(s\)\)"),
])
def test_bad_controlnets_and_control_clips_are_one_line_and_render_nothing(case, message, tmp_path, capsys,
                                                                           controlnet, other_base_controlnet,
                                                                           perturbed_weights):
    clip = source_gif(tmp_path / "c.gif")
    (tmp_path / "empty").mkdir()
    net = {"other base": other_base_controlnet, "damaged": damaged(controlnet, tmp_path),
           "missing": tmp_path / "nowhere", "bundled, not built": "toyworld:depth",
           "bundled, a path": "toyworld:../../x"}.get(case, controlnet)
    nets = ["--controlnet", str(net)] * (2 if case == "two nets, one clip" else 1)
    video = tmp_path / "empty" if case == "no frames" else clip
    assert animate(tmp_path, perturbed_weights, *nets, "--control-video", str(video)) == 2
    assert re.search(message, line(capsys.readouterr().err))
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


@pytest.fixture(scope="module")
def sparsectrl(tmp_path_factory):
    """A SparseCtrl ControlNet made from the tiny base's UNet (RGB: the keyframes' latents and their mask)."""
    from diffusers import SparseControlNetModel, UNet2DConditionModel

    unet = tiny.build_components()["unet"]  # from_unet edits the block types: a list, not the config's tuple
    unet = UNet2DConditionModel.from_config({**unet.config, "down_block_types": list(unet.config.down_block_types)})
    folder = tmp_path_factory.mktemp("sparse") / "tiny-sparsectrl"
    SparseControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(8, 8, 16, 16),
                                    conditioning_channels=4).save_pretrained(folder)
    return folder


def keyframes(tmp_path):
    Image.new("RGB", (64, 64), (200, 30, 30)).save(tmp_path / "first.png")
    Image.new("RGB", (80, 40), (30, 30, 200)).save(tmp_path / "last.png")  # another size: fitted to the clip
    return f"0:{tmp_path / 'first.png'},15:{tmp_path / 'last.png'}"


@torch.no_grad()
def test_sparsectrl_keyframes_are_diffusers_own_and_the_sidecar_regenerates_the_clip(tmp_path, sparsectrl,
                                                                                      perturbed_weights):
    from diffusers import AnimateDiffSparseControlNetPipeline, SparseControlNetModel

    assert animate(tmp_path, perturbed_weights, "--sparsectrl", str(sparsectrl), "--keyframes", keyframes(tmp_path),
                   "--format", "gif,png") == 0
    pipe = diffusers_pipeline(AnimateDiffSparseControlNetPipeline, perturbed_weights,
                              controlnet=SparseControlNetModel.from_pretrained(sparsectrl))
    frames = [Image.open(tmp_path / "first.png").convert("RGB"),
              Image.fromarray(np.asarray(Image.open(tmp_path / "last.png").convert("RGB").resize((128, 64)))[:, 32:96])]
    plain = pipe("a sks dog", num_frames=16, conditioning_frames=frames, controlnet_frame_indices=[0, 15],
                 height=64, width=64, num_inference_steps=4, generator=torch.Generator("cpu").manual_seed(7),
                 output_type="np").frames[0]
    assert np.abs(np.round(plain * 255) - frames_of(tmp_path / "out" / "a_sks_dog_s7_frames")).max() <= 1
    sidecar = tmp_path / "out" / "a_sks_dog_s7.json"
    assert json.loads(sidecar.read_text())["keyframes"] == {"0": str(tmp_path / "first.png"),
                                                            "15": str(tmp_path / "last.png")}
    assert main(["animate", "--sidecar", str(sidecar), "--format", "gif", "--output-dir", str(tmp_path / "b")]) == 0
    assert (tmp_path / "b" / "a_sks_dog_s7.gif").read_bytes() == sidecar.with_suffix(".gif").read_bytes()


@pytest.mark.parametrize("args, message", [
    (["--keyframes", "0:{d}/first.png,16:{d}/last.png"],
     r"--keyframes \[0, 16\]: a keyframe index must lie in \[0, 16\)"),
    (["--keyframes", "0:{d}/nowhere.png"], "keyframe .*nowhere.png not found"),
    (["--keyframes", "0:{d}/first.png", "--video", "{d}/first.png"], "--sparsectrl renders text to video"),
    (["--keyframes", "x:{d}/first.png"], "'x:.*first.png': write INDEX:IMAGE"),
])
def test_bad_keyframes_are_one_line_and_render_nothing(args, message, tmp_path, capsys, sparsectrl,
                                                       perturbed_weights):
    keyframes(tmp_path)
    args = [a.format(d=tmp_path) for a in args]
    assert animate(tmp_path, perturbed_weights, "--sparsectrl", str(sparsectrl), *args) == 2
    assert re.search(message, line(capsys.readouterr().err))
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_the_animate_tab_takes_a_control_clip_keyframes_and_an_image_prompt(tmp_path, controlnet, sparsectrl,
                                                                             ip_adapter, perturbed_weights):
    """The web app's Render with each conditioning input: the dropped files checked and kept in the user's folder
    under their sha256 (the sidecar names the kept copies), keyframes spread over the clip, the models picked inside
    the allowed folders; a model outside them, a dropped file of the wrong kind or a clip without its model is one
    line before any job starts."""
    from conftest import release_openmp_team

    from cdvideo.apps.ui import actions
    from cdvideo.apps.ui.access import Access
    from cdvideo.apps.ui.conditions import Conditions
    from cdvideo.apps.ui.jobs import JobManager
    from cdvideo.errors import CdvideoError

    release_openmp_team()  # as served: the jobs' threads hold the only OpenMP team
    allowed = [str(p.parent) for p in (controlnet, sparsectrl, ip_adapter)]
    mgr, me = JobManager(tmp_path / "ui"), Access(tmp_path / "ui", allowed).client("tab", None)
    clip, frames = source_gif(tmp_path / "walk.gif"), keyframes(tmp_path).split(",")
    first, last = (f.split(":", 1)[1] for f in frames)
    cases = {"control": Conditions(control=str(clip), controlnet=str(controlnet), preprocess="canny",
                                   control_scale=0.5),
             "keyframes": Conditions(keyframes=[first, last], sparsectrl=str(sparsectrl)),
             "image prompt": Conditions(ip_image=first, ip_adapter=str(ip_adapter), ip_scale=0.5)}
    render = lambda c: actions.start_render(mgr, me, None, "a sks dog", 8, 64, 4, 5.0, "1", "", 1.0,  # noqa: E731
                                            "tiny", uploaded=str(perturbed_weights), conditions=c)
    try:
        jobs = {name: render(c) for name, c in cases.items()}
        deadline = time.time() + 180
        while any(j.active for j in jobs.values()) and time.time() < deadline:
            time.sleep(0.05)
        records = {}
        for name, job in jobs.items():
            assert job.status == "done", (name, job.message)
            records[name] = json.loads(next(p for p in map(Path, job.files) if p.suffix == ".json").read_text())
        kept = lambda path: Path(path).parent == me.folder / "sources"  # noqa: E731
        r = records["control"]
        assert kept(r["control_videos"][0]["path"]) and [(n["scale"], n["preprocess"]) for n in r["controlnets"]] \
            == [(0.5, "canny")]
        assert sorted(records["keyframes"]["keyframes"]) == ["0", "7"]
        assert all(kept(f["path"]) for f in records["keyframes"]["keyframe_files"])
        r = records["image prompt"]
        assert kept(r["ip_adapter_image"]) and r["ip_adapter_scale"] == 0.5
        (tmp_path / "notes.txt").write_text("hello")
        for c, message in [(Conditions(control=str(clip), controlnet="/etc"), "outside the app's folders"),
                           (Conditions(keyframes=[str(tmp_path / "notes.txt")], sparsectrl=str(sparsectrl)),
                            "notes.txt: not an image"),
                           (Conditions(control=str(clip)), "give a control clip and a ControlNet together")]:
            with pytest.raises(CdvideoError, match=message):
                render(c)
        assert len(mgr.jobs) == 3
    finally:
        mgr.shutdown(timeout=60)


def test_the_worlds_mask_controlnet_steers_a_clip_along_a_path_pretraining_never_shows(tmp_path):
    """The miniature world's mask ControlNet (`--controlnet toyworld:mask`) on a clip: the masks of a striped ball
    circling (a motion no pretraining clip shows) as the control video, and the judge's track of the rendered clip
    follows the circle: on the 13-round model 4.6 px from it on average against 19.2 px for the same prompt and
    seed without it (read by the judge stage's judge 4.9 against 19.5; the 7-round model: 6.1 against 19.1). The
    ball keeps its stripes (pattern 1.00), but on the 7-round model its identity read 0.36 against 0.75: the
    circling mask is small, the ball drawn in it is small, and the judge read its class in 22% of frames (90%
    without). A quarter of the path error as margin."""
    from cdvideo.toyworld import judge as J
    from cdvideo.toyworld.motions import circling_masks, path_error

    appearance = ("ball", "yellow", "stripes", "purple")
    (gif, truth), judge = circling_masks(tmp_path), J.load()
    error, pattern = {}, {}
    for name, extra in (("with", ["--controlnet", "toyworld:mask", "--control-video", str(gif)]), ("without", [])):
        assert main(["animate", "--model", "toyworld", "--prompt", "a yellow ball with purple stripes on a gray "
                     "background", "--num-inference-steps", "10", "--seed", "0", "--format", "png",
                     "--output-dir", str(tmp_path / name), *extra]) == 0
        frames = frames_of(next((tmp_path / name).glob("*_frames")))
        reading = J.read(judge, [Image.fromarray(f) for f in frames])
        error[name] = path_error(reading, truth)
        pattern[name] = J.identity(reading, appearance, ("pattern",))
    assert error["with"] < 8.0 and error["without"] > 2 * error["with"], error
    assert pattern["with"] > 0.9, pattern
