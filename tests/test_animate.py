import json

import decord
import imageio.v3 as iio
import numpy as np
import pytest
import torch
from PIL import Image

from cdvideo.apps.cli import main
from cdvideo.data import weights
from cdvideo.pipelines.registry import load_adapter, make_scheduler
from cdvideo.pipelines.personalized import load_personalized
from cdvideo.pipelines.build import video_pipeline

FAST = ["--height", "64", "--width", "64", "--num-inference-steps", "2", "--seed", "7"]


def frames_of(folder):
    return [np.asarray(Image.open(p)) for p in sorted(folder.glob("*.png"))]


def test_animate_writes_mp4_gif_and_a_sidecar_that_regenerates(tmp_path, perturbed_weights, capsys):
    out = tmp_path / "out"
    assert main(["animate", "--weights", str(perturbed_weights), "--prompt", "sks dog running on beach",
                 "--format", "mp4,gif,png", "--output-dir", str(out), *FAST]) == 0
    stem = out / "sks_dog_running_on_beach_s7"
    video = decord.VideoReader(str(stem.with_suffix(".mp4")))
    assert len(video) == 16 and video[0].shape == (64, 64, 3)
    gif = iio.imread(stem.with_suffix(".gif"), index=None)
    assert gif.shape[:3] == (16, 64, 64)
    sidecar = json.loads(stem.with_suffix(".json").read_text())
    assert sidecar["seed"] == 7 and sidecar["weights"][0]["sha256"] and sidecar["adapter"] == "tiny"
    assert "wrote" in capsys.readouterr().out

    assert main(["animate", "--sidecar", str(stem.with_suffix(".json")), "--format", "png",
                 "--output-dir", str(out)]) == 0
    again = out / "sks_dog_running_on_beach_s7-2_frames"  # never overwrites: a suffix
    first = frames_of(out / "sks_dog_running_on_beach_s7_frames")
    assert len(first) == 16 and all(np.array_equal(a, b) for a, b in zip(first, frames_of(again)))


def test_the_gif_is_the_one_diffusers_writes(tmp_path):
    """cdvideo writes GIFs with PIL (a process writing one need not import diffusers): the same bytes as diffusers'
    `export_to_gif`, frame timing and loop included."""
    from diffusers.utils import export_to_gif

    from cdvideo.data.clips import write_gif

    rng = np.random.default_rng(0)
    frames = [Image.fromarray(rng.integers(0, 256, (48, 80, 3), dtype=np.uint8)) for _ in range(6)]
    export_to_gif(frames, str(tmp_path / "theirs.gif"), fps=8)
    write_gif(frames, tmp_path / "mine.gif", 8)
    assert (tmp_path / "mine.gif").read_bytes() == (tmp_path / "theirs.gif").read_bytes()


def render(m, adapter, prompt="a photo of sks dog", num_frames=16):
    pipe = video_pipeline(m, adapter, make_scheduler("ddim", m["scheduler"].config, animatediff=True))
    pipe.set_progress_bar_config(disable=True)
    if num_frames > 16:
        pipe.enable_free_noise(context_length=16, context_stride=4)
    out = pipe(prompt, num_frames=num_frames, height=64, width=64, num_inference_steps=2,
               generator=torch.Generator().manual_seed(0), output_type="np")
    return pipe, out.frames[0]


def test_personalization_reaches_the_motion_unet(perturbed_weights):
    w = weights.load(perturbed_weights)
    adapter = load_adapter("tiny", torch.float32)
    m, _, _ = load_personalized(None, [str(perturbed_weights)])
    pipe, tuned = render(m, adapter)
    params = dict(pipe.unet.named_parameters())
    assert type(pipe.unet).__name__ == "UNetMotionModel"
    for name, value in w.unet.items():
        assert torch.equal(params[name], value)
    motion = {n: p for n, p in adapter.named_parameters()}
    for name, p in pipe.unet.named_parameters():
        if "motion_modules." in name:
            assert torch.equal(p, motion[name]), name

    base, _, _ = load_personalized("tiny", [])
    base.update(tokenizer=m["tokenizer"], text_encoder=m["text_encoder"])  # same prompt ids, base K/V
    _, plain = render(base, adapter)
    assert np.abs(tuned - plain).max() > 1e-3

    zero, _, _ = load_personalized(None, [str(perturbed_weights)], scale=0.0)
    fresh = load_personalized("tiny", [])[0]
    base_params = dict(fresh["unet"].named_parameters())
    assert all(torch.equal(p, base_params[n]) for n, p in zero["unet"].named_parameters())
    _, at_zero = render(zero, adapter, prompt="a photo of a dog")
    _, at_base = render(fresh, adapter, prompt="a photo of a dog")
    assert np.array_equal(at_zero, at_base)


def test_free_noise_renders_longer_clips(tmp_path, perturbed_weights):
    assert main(["animate", "--weights", str(perturbed_weights), "--prompt", "sks dog", "--num-frames", "24",
                 "--format", "mp4", "--output-dir", str(tmp_path), *FAST]) == 0
    [mp4] = tmp_path.glob("*.mp4")
    assert len(decord.VideoReader(str(mp4))) == 24
    assert json.loads(mp4.with_suffix(".json").read_text())["free_noise"]["context_length"] == 16


def test_free_init_renders(tmp_path, perturbed_weights):
    """FreeInit re-noises the low frequencies and denoises again: the same seed gives another clip."""
    import numpy as np
    from PIL import Image

    clips = {}
    for flag in ([], ["--free-init"]):
        out = tmp_path / ("free" if flag else "plain")
        assert main(["animate", "--weights", str(perturbed_weights), "--prompt", "sks dog", "--num-frames", "8",
                     *flag, "--format", "png", "--output-dir", str(out), *FAST]) == 0
        [sidecar] = out.glob("*.json")
        assert json.loads(sidecar.read_text())["free_init"] is bool(flag)
        clips[bool(flag)] = np.stack([np.asarray(Image.open(f)) for f in sorted(out.glob("*_frames/*.png"))])
    assert clips[True].shape == clips[False].shape and np.abs(clips[True].astype(int) - clips[False]).mean() > 1


def test_prompt_file_with_schedule_and_seeds(tmp_path, perturbed_weights):
    prompts = tmp_path / "prompts.yaml"
    prompts.write_text("- prompt: {0: 'sks dog sitting', 8: 'sks dog jumping'}\n  seed: [1, 2]\n"
                       "  num_frames: 16\n- prompt: sks dog on the moon\n  guidance_scale: 5.0\n")
    assert main(["animate", "--weights", str(perturbed_weights), "--prompts", str(prompts), "--format", "gif",
                 "--output-dir", str(tmp_path / "o"), *FAST]) == 0
    names = sorted(p.name for p in (tmp_path / "o").glob("*.gif"))
    assert names == ["sks_dog_on_the_moon_s7.gif", "sks_dog_sitting_s1.gif", "sks_dog_sitting_s2.gif"]


def test_sample_writes_images_grid_and_sidecar(tmp_path, perturbed_weights):
    assert main(["sample", "--weights", str(perturbed_weights), "--prompt", "a sks dog", "--num-images-per-prompt",
                 "2", "--output-dir", str(tmp_path), *FAST]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "a_sks_dog_s7.json", "a_sks_dog_s7_0.png", "a_sks_dog_s7_1.png", "a_sks_dog_s7_grid.png"]
    assert json.loads((tmp_path / "a_sks_dog_s7.json").read_text())["num_inference_steps"] == 2


def test_base_model_without_weights(tmp_path):
    assert main(["sample", "--model", "tiny", "--prompt", "a dog", "--output-dir", str(tmp_path), *FAST]) == 0
    assert (tmp_path / "a_dog_s7_0.png").is_file()


@pytest.fixture
def other_arch(tmp_path):
    path = tmp_path / "other.safetensors"
    w = weights.PersonalWeights(unet={"down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight":
                                      torch.zeros(3, 3)}, tokens=["sks"], class_words=["dog"],
                                embeddings=torch.zeros(1, 32), metadata={"base_model": "tiny"})
    return weights.save(path, w)


@pytest.mark.parametrize("args, message", [
    (["--weights", "{tmp}/missing.safetensors"], "weights file .*missing.safetensors not found"),
    (["--weights", "{tmp}/fake.safetensors"], "fake.safetensors: not a safetensors file"),
    (["--weights", "{other}"], "other.safetensors: .*shape \\(3, 3\\).*another architecture"),
    (["--weights", "{good}", "--num-frames", "1000"], "--num-frames/--num_frames: 1000 is out of range; give 1 to 512"),
    (["--weights", "{good}", "--height", "100"], "height/width 100x64: use multiples of 8"),
    (["--weights", "{good}", "--height", "72"], "height/width 72x64: MP4 .* multiples of 16, e.g. 64x64"),
    (["--weights", "{good}", "--scheduler", "magic"], "unknown scheduler 'magic'"),
    (["--weights", "{good}", "--adapter", "v9"], "unknown motion adapter 'v9'"),
    (["--weights", "{good}", "--model", "someone/sd15-finetune"],
     "trained on base 'tiny', not 'someone/sd15-fi.*--force"),
    (["--model", "someone/unreachable-model"], "cannot load model 'someone/unreachable-model'.*local diffusers"),
    (["--weights", "{good}", "--format", "avi"], "--format avi: choose from"),
])
def test_bad_input_is_one_clear_error_and_leaves_no_files(tmp_path, capsys, perturbed_weights, other_arch, args,
                                                         message):
    (tmp_path / "fake.safetensors").write_text("hello")
    args = [a.format(tmp=tmp_path, good=perturbed_weights, other=other_arch) for a in args]
    out = tmp_path / "out"
    code = main(["animate", "--prompt", "sks dog", "--output-dir", str(out), *FAST[:4], *args])
    err = capsys.readouterr().err
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and __import__("re").search(message, lines[0]), err
    assert not out.exists() or not any(out.iterdir())


def test_prompt_without_token_warns(tmp_path, perturbed_weights, caplog):
    assert main(["animate", "--weights", str(perturbed_weights), "--prompt", "a dog running", "--format", "gif",
                 "--output-dir", str(tmp_path), *FAST]) == 0
    assert "does not use the token(s) sks" in caplog.text and "'sks dog ...'" in caplog.text


def test_force_uses_weights_on_a_same_shaped_base(tmp_path, perturbed_weights):
    from cdvideo.models import architectures as tiny
    folder = tiny.save_pretrained(tmp_path / "community-finetune")
    args = ["sample", "--weights", str(perturbed_weights), "--model", str(folder), "--prompt", "a sks dog",
            "--output-dir", str(tmp_path / "o"), *FAST]
    assert main(args) == 2
    assert main(args + ["--force"]) == 0
