import pytest
import torch
from conftest import tiny_overrides

from cdvideo.data import checkpoint, weights
from cdvideo.data.config import load_train_config
from cdvideo.errors import CdvideoError
from cdvideo.models import architectures as tiny
from cdvideo.models import personalize
from cdvideo.models.text import add_tokens
from cdvideo.tasks.train import train


def run(out, images, *extra, on_step=None):
    losses = []

    def record(step, logs):
        losses.append(logs)
        if on_step:
            on_step(step, logs)

    path = train(load_train_config(None, tiny_overrides(out, images, *extra)), on_step=record)
    return path, losses


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from conftest import FIXTURES
    out = tmp_path_factory.mktemp("run") / "dog"
    return run(out, FIXTURES / "dog")


def test_first_losses_are_pinned(trained):
    _, losses = trained
    got = [round(x["loss"], 4) for x in losses]
    spl = [round(x["loss/spl"], 5) for x in losses]
    assert got == pytest.approx(FIRST_LOSSES, abs=2e-4)
    assert spl == pytest.approx(FIRST_SPL, abs=2e-5)
    assert spl[0] > spl[-1]  # SPL pulls "a photo of a sks dog" toward "a photo of a dog"


def test_plain_path_keeps_its_losses_and_the_pool_matches_it_without_augmentation(tmp_path, dog_dir):
    """The fast paths change no numerics: token rows as their own parameter and SPL on the EOS prefix reproduce
    0.1.0's losses; without augmentation the latent pool draws the very same photos and noise."""
    _, plain = run(tmp_path / "plain", dog_dir, "latent_pool=off")
    assert [round(x["loss"], 4) for x in plain] == pytest.approx(PLAIN_LOSSES, abs=2e-4)
    _, a = run(tmp_path / "a", dog_dir, "augment=false", "latent_pool=off")
    _, b = run(tmp_path / "b", dog_dir, "augment=false")
    assert [x["loss"] for x in b] == pytest.approx([x["loss"] for x in a], abs=1e-5)


def test_subject_masks_weigh_the_loss_off_the_subject(tmp_path, dog_dir):
    """`concepts.0.masks`: at unmasked_weight 1 the run is the maskless one, bitwise; at 0 only the masked half of
    each photo counts (other losses); the latent pool and the live path agree with masks too."""
    import shutil

    from PIL import Image

    photos = tmp_path / "photos"
    (photos / "masks").mkdir(parents=True)
    for p in sorted(dog_dir.iterdir()):
        shutil.copy(p, photos / p.name)
        size = Image.open(p).size
        mask = Image.new("L", size, 0)
        mask.paste(255, (0, 0, size[0] // 2, size[1]))  # the left half
        mask.save(photos / "masks" / f"{p.stem}.png")
    masks = f"concepts.0.masks={photos / 'masks'}"
    _, plain = run(tmp_path / "plain", photos)
    _, one = run(tmp_path / "one", photos, masks, "unmasked_weight=1")
    assert [x["loss"] for x in one] == [x["loss"] for x in plain]
    _, zero = run(tmp_path / "zero", photos, masks, "unmasked_weight=0")
    assert all(abs(a["loss"] - b["loss"]) > 1e-4 for a, b in zip(zero, plain))
    _, live = run(tmp_path / "live", photos, masks, "unmasked_weight=0", "augment=false", "latent_pool=off")
    _, pooled = run(tmp_path / "pooled", photos, masks, "unmasked_weight=0", "augment=false")
    assert [x["loss"] for x in pooled] == pytest.approx([x["loss"] for x in live], abs=1e-5)


def test_channels_last_and_bf16_match_the_plain_path(tmp_path, dog_dir):
    """The memory-format and mixed-precision paths give the plain path's losses, to their precision."""
    _, plain = run(tmp_path / "p", dog_dir)
    _, cl = run(tmp_path / "cl", dog_dir, "channels_last=true")
    assert [x["loss"] for x in cl] == pytest.approx([x["loss"] for x in plain], abs=1e-4)
    _, bf16 = run(tmp_path / "bf", dog_dir, "mixed_precision=bf16")
    assert [x["loss"] for x in bf16] == pytest.approx([x["loss"] for x in plain], rel=0.05)
    assert [x["loss/spl"] for x in bf16] == pytest.approx([x["loss/spl"] for x in plain], abs=1e-6)  # fp32 text


def test_only_kv_and_token_rows_change(trained):
    path, _ = trained
    w = weights.load(path)
    base = tiny.build_components()
    tuned = tiny.build_components()
    ids = personalize.apply(w, tuned["unet"], tuned["text_encoder"], tuned["tokenizer"])
    add_tokens(base["tokenizer"], base["text_encoder"], ["sks"], ["dog"])

    kv = set(weights.cross_attention_names(base["unet"], "kv"))
    assert w.tokens == ["sks"] and set(w.unet) == kv and len(kv) == 8
    for (name, p0), (_, p1) in zip(base["unet"].named_parameters(), tuned["unet"].named_parameters()):
        assert torch.equal(p0, p1) != (name in kv), name
    e0 = base["text_encoder"].get_input_embeddings().weight
    e1 = tuned["text_encoder"].get_input_embeddings().weight
    assert not torch.equal(e0[ids], e1[ids])
    others = torch.ones(len(e0), dtype=torch.bool)
    others[ids] = False
    assert torch.equal(e0[others], e1[others])  # weight decay did not touch the other rows
    for (n, p0), (_, p1) in zip(base["text_encoder"].named_parameters(),
                                tuned["text_encoder"].named_parameters()):
        if "token_embedding" not in n:
            assert torch.equal(p0, p1), n


def test_token_learning_rate_is_the_token_rows_own(tmp_path, dog_dir):
    """optimizer.token_learning_rate=10x the K/V's: the token row moves about 10x as far from its initializer
    (Adam's steps scale with the rate), the K/V about as far as with one rate for both."""
    base = tiny.build_components()
    (init,) = add_tokens(base["tokenizer"], base["text_encoder"], ["sks"], ["dog"])
    row0 = base["text_encoder"].get_input_embeddings().weight[init].detach()
    kv0 = dict(base["unet"].named_parameters())
    moved = {}
    for name, extra in (("one rate", ()), ("token 10x", ("optimizer.token_learning_rate=1e-4",))):
        w = weights.load(run(tmp_path / name.replace(" ", "-"), dog_dir, *extra)[0])  # learning_rate 1e-5
        moved[name] = ((w.embeddings[0] - row0).norm().item(),
                       sum((v - kv0[n].detach()).norm().item() for n, v in w.unet.items()))
    token_ratio = moved["token 10x"][0] / moved["one rate"][0]
    assert 7 < token_ratio < 13 and moved["token 10x"][1] == pytest.approx(moved["one rate"][1], rel=0.1), moved


def test_min_and_max_timestep_choose_the_noise_levels_trained_on(tmp_path):
    """`min_timestep` / `max_timestep` (kohya's names): t uniform in [min, max). On the miniature model, whose noise
    prediction is near exact where the latent is nearly all noise and poor where it is nearly clean, the first
    step's loss at 900-1000 is under a hundredth of the one at 0-100 (measured 0.0073 against 1.96; all levels
    0.148). An empty range, or one beyond the base's noise levels, is one line naming the key."""
    loss = {}
    for low, high in ((900, 1000), (0, 100)):
        cfg = load_train_config(None, [
            "model=toyworld", f"output_dir={tmp_path / str(low)}", "concepts.0.images=toyworld:striped_ball",
            "concepts.0.class_word=ball", "resolution=64", "batch_size=4", "max_steps=1", "checkpoint_every=0",
            "report_to=none", f"min_timestep={low}", f"max_timestep={high}"])
        train(cfg, on_step=lambda step, logs, low=low: loss.setdefault(low, logs["loss/reconstruction"]))
    assert loss[900] < 0.1 * loss[0], loss
    with pytest.raises(CdvideoError, match=r"^min_timestep: 500 must be below max_timestep \(500\)$"):
        load_train_config(None, tiny_overrides(tmp_path / "empty", tmp_path, "min_timestep=500", "max_timestep=500"))


def test_min_snr_gamma_weighs_the_low_noise_levels_less(tmp_path, dog_dir):
    """`min_snr_gamma` (kohya's name; Min-SNR-gamma): on the same batch and noise, a step among the highest noise
    levels (SNR below gamma) has the unweighted loss to the bit, and one among the lowest the loss weighed by
    gamma / SNR per sample: the instance images' and the class images' alike. 0 or less is one line naming the key."""
    from cdvideo.math.losses import min_snr_weight, signal_to_noise

    snr = signal_to_noise(tiny.build_components()["scheduler"].alphas_cumprod, torch.arange(100))
    w = min_snr_weight(snr, 5.0, "epsilon")  # t = 0-99: from about 0.004 to 0.6
    prior = ["prior.enabled=true", "prior.num_class_images=2", "prior.num_inference_steps=2",
             f"prior.class_images={tmp_path / 'class'}"]
    first = {}
    for low, high in ((900, 1000), (0, 100)):
        for gamma in ([], ["min_snr_gamma=5"]):
            _, losses = run(tmp_path / f"{low}-{len(gamma)}", dog_dir, "max_steps=1", f"min_timestep={low}",
                            f"max_timestep={high}", *prior, *gamma)
            first[low, bool(gamma)] = losses[0]
    assert first[900, True]["loss/reconstruction"] == first[900, False]["loss/reconstruction"], first
    for part in ("loss/reconstruction", "loss/prior"):
        ratio = first[0, True][part] / first[0, False][part]
        assert w.min().item() - 1e-6 <= ratio <= w.max().item() + 1e-6 and ratio < 0.7, (part, ratio)
    with pytest.raises(CdvideoError, match=r"^min_snr_gamma: 0(\.0)? is out of range; give a value above 0"):
        load_train_config(None, tiny_overrides(tmp_path / "zero", tmp_path, "min_snr_gamma=0"))


def test_a_token_of_several_vectors_trains_each_row_as_the_pipelines_expand_it(tmp_path, dog_dir):
    """concepts.0.vectors=3 (multi-vector textual inversion): the file holds sks, sks_1 and sks_2, each row trained
    apart from the others though all start at the class word; the run trained on the prompt that a diffusers
    pipeline makes of "sks" once the file is loaded, so what renders is what trained."""
    from diffusers.loaders import TextualInversionLoaderMixin

    path, _ = run(tmp_path / "run", dog_dir, "concepts.0.vectors=3", "optimizer.learning_rate=1e-3")
    w = weights.load(path)
    assert w.tokens == ["sks", "sks_1", "sks_2"] and w.class_words == ["dog"] * 3
    rows = w.embeddings
    assert rows.shape[0] == 3 and min(torch.dist(rows[i], rows[j]).item() for i, j in ((0, 1), (0, 2), (1, 2))) > 0
    m = tiny.build_components()
    personalize.apply(w, m["unet"], m["text_encoder"], m["tokenizer"])
    cfg = load_train_config(None, tiny_overrides(tmp_path / "x", dog_dir, "concepts.0.vectors=3"))
    trained_on = cfg.instance_template.format(token=cfg.concepts[0].spelled(), class_word="dog")
    assert TextualInversionLoaderMixin().maybe_convert_prompt("photo of a sks dog", m["tokenizer"]) == trained_on
    assert trained_on == "photo of a sks sks_1 sks_2 dog"


def test_file_metadata_and_reload_reproduces_outputs(trained):
    path, _ = trained
    w = weights.load(path)
    for key in ("base_model", "base_revision", "tokens", "class_words", "trained_params", "dtype", "config",
                "cdvideo_version"):
        assert key in w.metadata
    assert w.base_model == "tiny" and w.class_words == ["dog"] and w.metadata["config"]["max_steps"] == 3
    a, b = tiny.build_components(), tiny.build_components()
    weights.validate(w, a["unet"], a["text_encoder"], a["tokenizer"], base_model="tiny")
    personalize.apply(w, a["unet"], a["text_encoder"], a["tokenizer"])
    personalize.apply(w, b["unet"], b["text_encoder"], b["tokenizer"])
    ids = a["tokenizer"](["a photo of a sks dog"], padding="max_length", return_tensors="pt").input_ids
    x, t = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0)), torch.tensor([10])
    with torch.no_grad():
        ca, cb = a["text_encoder"](ids).last_hidden_state, b["text_encoder"](ids).last_hidden_state
        assert torch.equal(ca, cb)
        assert torch.equal(a["unet"](x, t, ca).sample, b["unet"](x, t, cb).sample)
        # and the tuned file's tensors are what the UNet now holds
        params = dict(a["unet"].named_parameters())
        assert all(torch.equal(params[n], v) for n, v in w.unet.items())


def test_weights_file_reproduces_the_trained_models_images(tmp_path, dog_dir):
    """The last validation image (rendered by the in-memory trained model) equals `cdvideo sample` from the file."""
    import numpy as np
    from PIL import Image

    from cdvideo.apps.cli import main

    path, _ = run(tmp_path / "run", dog_dir, "validation.every=3", "validation.num_inference_steps=3",
                  "validation.prompts=[a photo of a sks dog]", "validation.seeds=[5]")
    trained = np.asarray(Image.open(tmp_path / "run" / "validation" / "step_000003" / "00_seed5.png"))
    assert main(["sample", "--weights", str(path), "--prompt", "a photo of a sks dog", "--seed", "5",
                 "--scheduler", "dpmpp", "--num-inference-steps", "3", "--guidance-scale", "6.0", "--height", "64",
                 "--width", "64", "--output-dir", str(tmp_path / "s")]) == 0
    reloaded = np.asarray(Image.open(tmp_path / "s" / "a_photo_of_a_sks_dog_s5_0.png"))
    assert np.array_equal(trained, reloaded)


def test_resume_is_bitwise_equal(tmp_path, dog_dir):
    full, _ = run(tmp_path / "full", dog_dir, "max_steps=4", "checkpoint_every=2")

    class Crash(Exception):
        pass

    def crash_after_3(step, logs):
        if step == 3:
            raise Crash

    with pytest.raises(Crash):
        run(tmp_path / "cut", dog_dir, "max_steps=4", "checkpoint_every=2", on_step=crash_after_3)
    assert not (tmp_path / "cut" / "weights.safetensors").exists()
    assert checkpoint.list_checkpoints(tmp_path / "cut")[-1].name == "step_000002"
    resumed, losses = run(tmp_path / "cut", dog_dir, "max_steps=4", "checkpoint_every=2", "resume=latest")
    assert len(losses) == 2
    a, b = weights.load(full), weights.load(resumed)
    assert torch.equal(a.embeddings, b.embeddings)
    assert all(torch.equal(a.unet[k], b.unet[k]) for k in a.unet)


def test_outputs_are_never_overwritten(tmp_path, dog_dir):
    run(tmp_path / "r", dog_dir, "max_steps=1")
    before = (tmp_path / "r" / "weights.safetensors").read_bytes()
    with pytest.raises(CdvideoError, match="already holds a run"):
        run(tmp_path / "r", dog_dir, "max_steps=1", "seed=1")
    assert (tmp_path / "r" / "weights.safetensors").read_bytes() == before
    run(tmp_path / "r", dog_dir, "max_steps=1", "seed=1", "overwrite=true")
    assert (tmp_path / "r" / "weights.safetensors").read_bytes() != before


def test_nan_loss_stops_and_keeps_checkpoint(tmp_path, dog_dir, monkeypatch):
    """A run whose loss turns NaN (here SPL's, from step 2 on: a diverging run's) stops at once, keeps the last good
    checkpoint and writes no weights."""
    from cdvideo.math.losses import semantic_preservation_loss
    from cdvideo.tasks import train as train_module

    calls = []

    def nan_from_step_2(*args, **kwargs):
        calls.append(1)
        return semantic_preservation_loss(*args, **kwargs) * (1.0 if len(calls) < 2 else float("nan"))

    monkeypatch.setattr(train_module, "semantic_preservation_loss", nan_from_step_2)
    with pytest.raises(CdvideoError, match=r"loss became .* at step \d+.*last good checkpoint: .*step_000001"):
        run(tmp_path / "nan", dog_dir, "max_steps=50", "checkpoint_every=1")
    assert not (tmp_path / "nan" / "weights.safetensors").exists()
    assert checkpoint.list_checkpoints(tmp_path / "nan")


def test_prior_preservation_with_spl(tmp_path, dog_dir):
    _, losses = run(tmp_path / "prior", dog_dir, "max_steps=2", "prior.enabled=true", "prior.num_class_images=2",
                    "prior.num_inference_steps=2")
    assert len(list((tmp_path / "prior" / "class_images" / "dog").glob("*.png"))) == 2
    for x in losses:  # the class images ride along: their MSE enters the loss (weight 1) beside SPL
        assert x["loss/prior"] > 0 and x["loss/spl"] > 0
        assert abs(x["loss"] - (x["loss/reconstruction"] + x["loss/prior"] + x["loss/spl"])) < 1e-4


def test_token_colliding_with_an_added_token(tmp_path, dog_dir):
    cfg = load_train_config(None, tiny_overrides(tmp_path / "x", dog_dir, "concepts.0.token=<|endoftext|>"))
    with pytest.raises(CdvideoError, match="already an added token"):
        train(cfg)
    assert not (tmp_path / "x").exists()


def test_offline_model_id_says_how_to_point_at_a_folder(tmp_path, dog_dir):
    cfg = load_train_config(None, tiny_overrides(tmp_path / "x", dog_dir, "model=someone/not-cached-model"))
    with pytest.raises(CdvideoError, match="set `model:` to the local diffusers folder"):
        train(cfg)


def test_local_diffusers_folder_loads(tmp_path, dog_dir):
    folder = tiny.save_pretrained(tmp_path / "tiny-sd")
    path, _ = run(tmp_path / "local", dog_dir, f"model={folder}", "max_steps=1")
    assert weights.load(path).base_model == str(folder)
    schedule = folder / "scheduler" / "scheduler_config.json"  # a base trained on 500 noise levels
    schedule.write_text(schedule.read_text().replace('"num_train_timesteps": 1000', '"num_train_timesteps": 500'))
    with pytest.raises(CdvideoError, match=r"^max_timestep: 1000 is beyond the 500 noise levels of .*at most 500$"):
        run(tmp_path / "short", dog_dir, f"model={folder}", "max_steps=1")
    assert not (tmp_path / "short").exists()  # refused before anything was written


FIRST_LOSSES = [1.3478, 1.3048, 1.2485]  # the default path: a pool of augmented latents encoded once
PLAIN_LOSSES = [1.3207, 1.4414, 1.4054]  # latent_pool=off: every step augments and encodes (0.1.0's numbers)
FIRST_SPL = [0.1999, 0.19958, 0.19926]


@pytest.mark.parametrize("stop_at", [9, 10])  # 10: right after the loss flush of log_every=10
def test_a_stop_request_saves_a_resumable_checkpoint_at_that_step(tmp_path, dog_dir, stop_at):
    from cdvideo.tasks.train import TrainingStopped

    calls = []

    def should_stop() -> bool:
        calls.append(1)
        return len(calls) >= stop_at
    cfg = load_train_config(None, tiny_overrides(tmp_path / "run", dog_dir, "max_steps=20", "log_every=10"))
    with pytest.raises(TrainingStopped) as stopped:
        train(cfg, should_stop=should_stop)
    assert stopped.value.step == stop_at
    assert stopped.value.folder == checkpoint.checkpoint_dir(tmp_path / "run", stop_at)
    assert checkpoint.list_checkpoints(tmp_path / "run")[-1] == stopped.value.folder
