"""`cdvideo animate --ip-adapter FILE --ip-adapter-image IMAGE`: an image prompt beside the subject's weights,
through diffusers' own IP-Adapter loader; the file is h94/IP-Adapter's layout (diffusers reads it from disk and
renders the same clip); the sidecar records adapter, image and scale and regenerates the clip; a file that does not
fit the base, is damaged or lacks its image encoder is one line before anything renders. Tiny random models: no
miniature IP-Adapter is trained (its image encoder alone would be a stage of the world's build)."""

import json
import re
import shutil

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file
from test_controlnet import animate, diffusers_pipeline
from test_video_to_video import frames_of, line

from cdvideo.apps.cli import main


def photo(path, colour=(220, 40, 40)):
    a = np.zeros((48, 40, 3), np.uint8)
    a[8:40, 8:32] = colour
    Image.fromarray(a).save(path)
    return path


@torch.no_grad()
def test_image_prompt_is_diffusers_own_and_its_sidecar_regenerates_it(tmp_path, capsys, ip_adapter,
                                                                       perturbed_weights):
    from diffusers import AnimateDiffPipeline

    image = photo(tmp_path / "photo.png")
    assert animate(tmp_path, perturbed_weights, "--ip-adapter", str(ip_adapter), "--ip-adapter-image", str(image),
                   "--ip-adapter-scale", "0.7", "--num-frames", "8", "--format", "gif,png") == 0
    pipe = diffusers_pipeline(AnimateDiffPipeline, perturbed_weights)
    pipe.load_ip_adapter(str(ip_adapter.parent), subfolder="", weight_name=ip_adapter.name)  # reads the files
    pipe.set_ip_adapter_scale(0.7)
    plain = pipe("a sks dog", num_frames=8, ip_adapter_image=Image.open(image).convert("RGB"), height=64, width=64,
                 num_inference_steps=4, generator=torch.Generator("cpu").manual_seed(7), output_type="np").frames[0]
    assert np.abs(np.round(plain * 255) - frames_of(tmp_path / "out" / "a_sks_dog_s7_frames")).max() <= 1
    sidecar = tmp_path / "out" / "a_sks_dog_s7.json"
    record = json.loads(sidecar.read_text())
    assert (record["ip_adapter"]["path"], record["ip_adapter_scale"]) == (str(ip_adapter.resolve()), 0.7)
    assert main(["animate", "--sidecar", str(sidecar), "--format", "gif", "--output-dir", str(tmp_path / "b")]) == 0
    assert (tmp_path / "b" / "a_sks_dog_s7.gif").read_bytes() == sidecar.with_suffix(".gif").read_bytes()
    photo(image, colour=(40, 40, 220))
    capsys.readouterr()
    assert main(["animate", "--sidecar", str(sidecar), "--output-dir", str(tmp_path / "c")]) == 2
    assert "photo.png is missing or changed" in line(capsys.readouterr().err)


def test_the_image_conditions_the_clip_and_scale_zero_leaves_the_text_alone(tmp_path, ip_adapter,
                                                                            perturbed_weights):
    """Scale 0 renders the clip of no IP-Adapter; scale 1 with one image differs from it and from another image."""
    clips = {}
    for name, args in {"none": [], "zero": ["--ip-adapter-scale", "0", "--ip-adapter-image", "red.png"],
                       "red": ["--ip-adapter-image", "red.png"], "blue": ["--ip-adapter-image", "blue.png"]}.items():
        photo(tmp_path / "red.png"), photo(tmp_path / "blue.png", (40, 40, 220))
        args = [str(tmp_path / a) if a.endswith(".png") else a for a in args]
        ip = ["--ip-adapter", str(ip_adapter)] if args else []
        assert animate(tmp_path / name, perturbed_weights, *ip, *args, "--num-frames", "8", "--format", "png") == 0
        clips[name] = frames_of(tmp_path / name / "out" / "a_sks_dog_s7_frames").astype(int)
    assert np.abs(clips["zero"] - clips["none"]).max() <= 1
    assert np.abs(clips["red"] - clips["none"]).mean() > 1 and np.abs(clips["red"] - clips["blue"]).mean() > 1


def other_base(ip_adapter, tmp_path):
    """The tiny adapter with its last cross-attention layer reading 16-d text (a base the tiny one is not)."""
    folder = shutil.copytree(ip_adapter.parent, tmp_path / "other")
    state = load_file(ip_adapter)
    last = max(int(k.split(".")[1]) for k in state if k.startswith("ip_adapter."))
    for kv in ("k", "v"):
        state[f"ip_adapter.{last}.to_{kv}_ip.weight"] = torch.zeros(16, 16)
    save_file(state, folder / ip_adapter.name)
    return folder / ip_adapter.name


@pytest.mark.parametrize("case, message", [
    ("other base", r"IP-Adapter .*other/ip-adapter.safetensors was made for another base than tiny \(4 "
                   r"cross-attention layers .* vs 4"),
    ("damaged", r"IP-Adapter .*damaged.safetensors: cannot be read"),
    ("no encoder", r"IP-Adapter .*: its image encoder is missing; put the CLIP image encoder"),
    ("missing", r"IP-Adapter .*nowhere.safetensors: no such file"),
    ("no image", r"--ip-adapter and --ip-adapter-image go together"),
    ("not an image", r"IP-Adapter image .*notes.png: not a readable image"),
])
def test_bad_ip_adapters_and_images_are_one_line_and_render_nothing(case, message, tmp_path, capsys, ip_adapter,
                                                                    perturbed_weights):
    image = photo(tmp_path / "photo.png")
    if case == "damaged":
        shutil.copytree(ip_adapter.parent, tmp_path / "d")
        (tmp_path / "d" / "damaged.safetensors").write_bytes(ip_adapter.read_bytes()[:500])
    if case == "no encoder":
        (tmp_path / "bare").mkdir()
        shutil.copy(ip_adapter, tmp_path / "bare")
    if case == "not an image":
        image = tmp_path / "notes.png"
        image.write_text("not a picture")
    ref = {"other base": other_base(ip_adapter, tmp_path), "damaged": tmp_path / "d" / "damaged.safetensors",
           "no encoder": tmp_path / "bare" / ip_adapter.name,
           "missing": tmp_path / "nowhere.safetensors"}.get(case, ip_adapter)
    args = [] if case == "no image" else ["--ip-adapter-image", str(image)]
    assert animate(tmp_path, perturbed_weights, "--ip-adapter", str(ref), *args) == 2
    assert re.search(message, line(capsys.readouterr().err))
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
