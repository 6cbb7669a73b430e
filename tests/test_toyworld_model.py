"""The judge and the shipped miniature model: accuracy on fresh renders, loading through every command, and
prompts followed (thresholds measured on the shipped model, see docs/toyworld.md)."""

import json

import numpy as np
import pytest
import torch

from cdvideo.apps.cli import main
from cdvideo.models.architectures import tokenizer_dir
from cdvideo.models.loading import load_components
from cdvideo.pipelines.build import image_pipeline, video_pipeline
from cdvideo.pipelines.registry import load_adapter, make_scheduler
from cdvideo.toyworld import MODEL_ID, draw, instances, model_dir, scoring, world
from cdvideo.toyworld import judge as J

FRESH_SEED = 12345  # no build stage renders with this seed


@pytest.fixture(scope="module")
def judge():
    return J.load()


@pytest.fixture(scope="module")
def components():
    return load_components(MODEL_ID)


@pytest.fixture(scope="module")
def pipe(components):
    """The shipped model's image pipeline with DDIM, as `cdvideo sample --model toyworld` builds it."""
    pipe = image_pipeline(components, scheduler=make_scheduler("ddim", components["scheduler"].config, False))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_judge_reads_fresh_renders(judge):
    rng = np.random.default_rng(FRESH_SEED)
    scenes = [world.sample_scene(rng) for _ in range(400)]
    reading = J.read(judge, np.stack([draw.render(s)[0] for s in scenes]))
    for head in ("cls", "colour", "background", "position", "size"):
        pred = reading.probs[head].argmax(-1).numpy()
        truth = np.array([J.HEADS[head].index(getattr(s, head)) for s in scenes])
        assert (pred == truth).mean() >= 0.95, head
    clips = [world.sample_scene(rng, clip=True) for _ in range(60)]
    motions = [J.motion(J.read(judge, draw.render(s))) == s.motion for s in clips]
    assert np.mean(motions) >= 0.85


# measured on the shipped (judge_twins) judge (the 400 stills below), beside the 0.95 the issue asks of each head
# (the judge_clips judge: class 0.998, colour 0.953, accessory and its colour 0.985; the judge stage's judge: class
# 0.993, accessory 0.99, its colour 0.98, other 0.998)
SECOND_EDITION_MEASURED = {"cls": 0.998, "colour": 0.978, "background": 1.0, "position": 1.0, "size": 1.0,
                           "accessory": 0.99, "accessory_colour": 0.988, "other": 1.0, "other_colour": 1.0,
                           "relation": 1.0}


def test_the_judge_reads_accessories_and_companions(judge):
    rng = np.random.default_rng(FRESH_SEED)
    scenes = [world.sample_scene(rng, accessory_p=0.4, companion_p=0.4) for _ in range(400)]
    reading = J.read(judge, np.stack([draw.render(s)[0] for s in scenes]))
    for head, measured in SECOND_EDITION_MEASURED.items():
        pred = reading.probs[head].argmax(-1).numpy()
        truth = np.array([J.HEADS[head].index(getattr(s, head) or "none") for s in scenes])
        # the body colour of a small spotted or rimmed object is the hardest reading: 0.94 there
        assert (pred == truth).mean() >= (0.94 if head == "colour" else 0.95), (head, (pred == truth).mean(), measured)


# Every frame of 48 fresh moving clips (translations and size changes), the shipped judge (stage judge_twins): class
# 0.988, colour 0.930, pattern 0.979, pattern colour 0.919 (mean 0.954). The judge_clips judge: 0.962, 0.872, 0.960,
# 0.836 (mean 0.908; its worst frame index: class 0.83, pattern 0.90). The judge stage's judge read an object
# between its five still positions worse than on them: 0.822, 0.867, 0.874, 0.755 (mean 0.830; class 0.69 at its
# worst frame index). A small object's colours are the hard part.
MOVING_MEAN_MIN, MOVING_CLASS_PATTERN_MIN = 0.88, 0.92


def test_the_judge_reads_a_moving_object_wherever_the_motion_puts_it(judge):
    from cdvideo.apps.worldbuild.judge_clips import MOVING, frame_accuracy

    rng = np.random.default_rng(FRESH_SEED)
    scenes = [world.with_motion(world.sample_scene(rng), rng, MOVING[i % 6]) for i in range(48)]
    acc = frame_accuracy(judge, [draw.render(s) for s in scenes], scenes)
    assert np.mean(list(acc.values())) >= MOVING_MEAN_MIN, acc
    assert min(acc["cls"], acc["pattern"]) >= MOVING_CLASS_PATTERN_MIN, acc


# Frames of 24 fresh two-coloured objects moving up or down read with their two colours exchanged: the shipped judge
# (stage judge_twins) SWAPPED_MEASURED; the judge_clips stage's, shipped before it, SWAPPED_BEFORE (docs/toyworld.md,
# "What the `judge_twins` stage mends")
SWAPPED_MEASURED, SWAPPED_BEFORE, SWAPPED_MAX = 0.052, 0.135, 0.09


def test_the_judge_tells_the_body_colour_of_an_object_travelling_up_or_down(judge):
    from cdvideo.apps.worldbuild.common import two_coloured_scene

    rng = np.random.default_rng(FRESH_SEED)
    scenes = [world.with_motion(two_coloured_scene(rng), rng, ("up", "down")[i % 2]) for i in range(24)]
    share = np.concatenate([J.swapped(J.read(judge, draw.render(s)), s.appearance) for s in scenes]).mean()
    assert share <= SWAPPED_MAX, (share, SWAPPED_MEASURED)


# Rendered clips along each of the world's sweeps (16 fresh scenes for each of the six motions, every sweep), read as
# their motion by the shipped judge (stage judge_motion): SWEEPS_MEASURED at worst (short translations and middle
# size changes, the ones the shipped `+sizes` adapter learnt to draw); the judge_twins judge, shipped before it,
# SWEEPS_BEFORE (docs/toyworld.md, "What the `judge_motion` stage mends")
SWEEPS_MEASURED, SWEEPS_BEFORE, SWEEPS_MIN = 0.906, 0.359, 0.85


def test_the_judge_reads_the_motion_of_every_sweep_the_world_draws(judge):
    from cdvideo.apps.worldbuild.judge_motion import sweep_readings

    shares = {k: v["read_as_asked"] for k, v in sweep_readings(judge, per_motion=16, seed=FRESH_SEED).items()}
    assert min(shares.values()) >= SWEEPS_MIN, (shares, SWEEPS_MEASURED)


def test_accessory_and_companion_prompts_score_what_the_world_draws(judge):
    """The evaluation prompts' asked attributes match the world: a 'model' that draws exactly what each prompt says
    (the renderer) honours every asked head; one that leaves the accessory or companion out honours none of it."""
    rng = np.random.default_rng(FRESH_SEED)
    for prompts, add, heads in ((scoring.accessory_prompts(24), lambda s, a: world.with_accessory(
            s, rng, a["accessory"], a["accessory_colour"]), ("accessory", "accessory_colour")),
                                (scoring.companion_prompts(24), lambda s, a: world.with_companion(
            s, rng, a["other"], a["other_colour"], a["relation"]), ("other", "other_colour", "relation"))):
        plain = [world.Scene(p.asked["cls"], p.asked["colour"], background=p.asked["background"], seed=p.seed)
                 for p in prompts]
        drawn = scoring.score(judge, [draw.render(add(s, p.asked)) for s, p in zip(plain, prompts)], prompts)
        assert min(drawn.honoured.values()) >= 0.95, drawn.honoured
        left_out = scoring.score(judge, [draw.render(s) for s in plain], prompts)
        assert max(left_out.honoured[h] for h in heads) == 0.0, left_out.honoured


def test_model_is_an_sd15_shaped_diffusers_folder(components):
    index = json.loads((model_dir() / "model_index.json").read_text())
    assert index["_class_name"] == "StableDiffusionPipeline"
    assert {type(components[k]).__name__ for k in ("text_encoder", "vae", "unet", "tokenizer")} == {
        "CLIPTextModel", "AutoencoderKL", "UNet2DConditionModel", "CLIPTokenizer"}
    assert len(components["tokenizer"]) == 49408
    names = [n for n, _ in components["unet"].named_parameters()]
    assert "down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k.weight" in names
    size = sum(p.stat().st_size for p in model_dir().parent.rglob("*.safetensors"))
    assert size <= 40 * 2**20  # the second edition's budget
    tokenizer = model_dir() / "tokenizer"  # SD1.5's own files, as the hub's SD1.5 repositories hold them
    assert sorted(p.name for p in tokenizer.iterdir()) == sorted(TOKENIZER_FILES)
    assert all((tokenizer / n).read_bytes() == (tokenizer_dir() / n).read_bytes() for n in TOKENIZER_FILES)


TOKENIZER_FILES = ("vocab.json", "merges.txt", "tokenizer_config.json")


def test_the_export_writes_sd15s_tokenizer_files_with_the_same_ids(tmp_path):
    """`save_pretrained` writes the tokenizer as one tokenizer.json (3.6 MB, 0.3 s to read); the export puts SD1.5's
    vocab.json and merges.txt in its place (0.07 s), which give every caption of the world the same ids."""
    from transformers import CLIPTokenizer

    from cdvideo.apps.worldbuild.export import write_tokenizer

    folder = tmp_path / "tokenizer"
    CLIPTokenizer.from_pretrained(str(tokenizer_dir())).save_pretrained(folder)
    assert (folder / "tokenizer.json").is_file()
    saved = CLIPTokenizer.from_pretrained(str(folder))
    write_tokenizer(folder)
    assert sorted(p.name for p in folder.iterdir()) == sorted(TOKENIZER_FILES)
    rng = np.random.default_rng(FRESH_SEED)
    texts = [world.caption(world.sample_scene(rng, accessory_p=0.4, companion_p=0.4, clip=i % 2 == 0), rng)
             for i in range(300)] + ["a sks dog wearing headphones", "A PHOTO of a dog, 日本語 🐶", "x" * 300]
    written = CLIPTokenizer.from_pretrained(str(folder))
    assert [written(t).input_ids for t in texts] == [saved(t).input_ids for t in texts]
    assert written.model_max_length == 77 and written.pad_token == written.eos_token == "<|endoftext|>"


@torch.no_grad()
def test_the_vae_keeps_what_identifies_each_instance(components, judge):
    """No UNet can draw what the VAE's encode-decode loses (`python -m cdvideo.apps.worldbuild.ceiling`): each
    instance's own big renders read about as well through the shipped VAE as raw; rimmed_box's thin rim loses some
    of its colour (measured on these 8 renders: 0.91 raw, 0.82 through the VAE, the rim's colour 0.46; the others
    0.95-1.00 both ways, within 0.015)."""
    from cdvideo.apps.worldbuild.ceiling import own_renders, round_trip, traits

    rng = np.random.default_rng(FRESH_SEED)
    for name, inst in instances.INSTANCES.items():
        frames = own_renders(inst, 8, rng)
        raw, decoded = traits(judge, frames, inst)["identity"], traits(judge, round_trip(components["vae"], frames),
                                                                       inst)["identity"]
        if name == "rimmed_box":
            assert decoded > 0.75, decoded
        else:
            assert decoded > 0.9 and raw - decoded < 0.04, (name, raw, decoded)


@torch.no_grad()
def test_prompts_are_followed_and_guidance_matters(pipe, judge):
    prompts = scoring.image_prompts(32)
    rates = {}
    for g in (1.0, 5.0):
        images = pipe([p.text for p in prompts], num_inference_steps=20, guidance_scale=g,
                      generator=torch.Generator().manual_seed(0)).images
        rates[g] = scoring.score(judge, [[im] for im in images], prompts).honoured
    assert rates[5.0]["cls"] >= CLASS_MIN and rates[5.0]["background"] >= BACKGROUND_MIN, rates
    assert rates[5.0]["colour"] > rates[1.0]["colour"]  # classifier-free guidance sharpens the prompt


@torch.no_grad()
def test_an_instance_spelled_out_is_drawn(pipe, judge):
    """The ceiling of any personalization: told striped_ball's four traits in words ('a big yellow ball with purple
    stripes on a gray background'), the model draws them; told only 'ball', it does not."""
    inst = instances.get("striped_ball")
    spelled = scoring.spelled_prompts(inst, 8)
    reads = {}
    for name, texts in (("spelled out", [p.text for p in spelled]),
                        ("class word", [p.text.replace(f"big {inst.describe()}", "big ball") for p in spelled])):
        images = pipe(texts, num_inference_steps=20, guidance_scale=5.0,
                      generator=[torch.Generator().manual_seed(p.seed) for p in spelled]).images
        reads[name] = float(np.mean([J.identity(J.read(judge, [im]), inst.appearance) for im in images]))
    assert reads["spelled out"] >= SPELLED_MIN and reads["class word"] < reads["spelled out"] - 0.3, reads


@torch.no_grad()
def test_a_next_to_caption_draws_both_objects(pipe, judge):
    """'a red ball next to a blue star': the judge finds the subject and the second object, each in its colour."""
    prompts = [p for p in scoring.companion_prompts(24) if p.asked["relation"] is None]  # 'next to'
    images = pipe([p.text for p in prompts], num_inference_steps=20, guidance_scale=5.0,
                  generator=[torch.Generator().manual_seed(p.seed) for p in prompts]).images
    honoured = scoring.score(judge, [[im] for im in images], prompts).honoured
    assert all("next to" in p.text for p in prompts) and len(prompts) == 8
    assert min(honoured[k] for k in ("cls", "colour", "other", "other_colour")) >= NEXT_TO_MIN, honoured


@pytest.fixture(scope="module")
def video_pipe(components):
    """The shipped model's AnimateDiff pipeline with the shipped adapter and DDIM, as `cdvideo animate` builds it."""
    pipe = video_pipeline(components, load_adapter(MODEL_ID, torch.float32),
                          make_scheduler("ddim", components["scheduler"].config, animatediff=True))
    pipe.set_progress_bar_config(disable=True)
    return pipe


@torch.no_grad()
def test_clips_are_coherent_and_follow_the_prompt(video_pipe, judge):
    pipe = video_pipe
    prompts = scoring.clip_prompts(6)
    clips = [pipe(p.text, num_frames=16, num_inference_steps=10, guidance_scale=5.0, output_type="pil",
                  generator=torch.Generator().manual_seed(p.seed)).frames[0] for p in prompts]
    honoured = scoring.score(judge, clips, prompts).honoured
    assert honoured["motion"] >= MOTION_MIN and honoured["background"] >= BACKGROUND_MIN, honoured
    frames = [np.stack([np.asarray(f, dtype=np.float32) for f in clip]) for clip in clips]  # (F, H, W, 3) each
    within = np.mean([np.abs(f[1:] - f[:-1]).mean() for f in frames])  # consecutive frames of one clip
    across = np.mean([np.abs(frames[i] - frames[i - 1]).mean() for i in range(len(frames))])  # two clips
    assert within < COHERENCE_MAX * across  # a clip, not a flicker of unrelated frames


def test_every_command_loads_toyworld(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "model=toyworld", f"output_dir={out}", "concepts.0.images=toyworld:striped_ball",
                 "concepts.0.class_word=ball", "resolution=64", "max_steps=2", "checkpoint_every=0",
                 "report_to=none"]) == 0
    weights = out / "weights.safetensors"
    fast = ["--num-inference-steps", "2", "--seed", "1"]
    assert main(["sample", "--weights", str(weights), "--prompt", "a sks ball on a blue background",
                 "--output-dir", str(tmp_path / "img"), *fast]) == 0
    assert main(["animate", "--weights", str(weights), "--prompt", "a sks ball moving right",
                 "--output-dir", str(tmp_path / "vid"), "--format", "gif", *fast]) == 0
    sidecar = json.loads(next((tmp_path / "vid").glob("*.json")).read_text())
    assert sidecar["adapter"] == "toyworld" and sidecar["height"] == 64
    assert main(["drift", "--weights", str(weights), "-o", str(tmp_path / "drift" / "d")]) == 0
    drift = json.loads((tmp_path / "drift" / "d.json").read_text())
    assert "small red ball" in drift["phrases"]
    assert main(["eval", "--weights", str(weights), "--prompts", str(prompt_file(tmp_path)), "--seeds", "0",
                 "--metrics", "clip_t", "--clip-model", "tiny", "--num-inference-steps", "2",
                 "--output-dir", str(tmp_path / "eval")]) == 0
    assert (tmp_path / "eval" / "summary.md").is_file()
    capsys.readouterr()


def prompt_file(tmp_path):
    path = tmp_path / "prompts.txt"
    path.write_text("a {token} {class_word} on a green background\n")
    return path


# Thresholds: measured on the shipped second edition (14 UNet rounds, the judge_motion judge) with these exact prompts
# and seeds (guidance 5: class and background 1.00; guidance 1: colour 0.84; clips through the shipped `+sizes`
# adapter: class, colour and background 1.00, motion 0.50 (3 of 6: left, growing, shrinking; chance is 1 in 7; the
# report's 24 clips: 15 of 24; by the judge_twins judge 1 of 6 and 10 of 24, by the judge_clips judge 2 of 6 and 11
# of 24), consecutive-frame difference 0.093 of the difference between
# clips; through the adapter before it 1 of 6, the 13-round model 2 of 6 and 12 of 24, 0.09; read by the judge
# stage's judge, the clips' class 0.83; the 7-round model's frames 0.10), set lower where a thread count could move
# a reading, so that a broken model, adapter or loader fails.
# docs/toyworld.md has the larger evaluation.
CLASS_MIN = 0.75
BACKGROUND_MIN = 0.75
MOTION_MIN = 0.3  # 2 of 6 clips: one below the shipped judge's reading (the judge_twins judge 1 of 6, the
# judge_clips judge 2 of 6; the adapter before it 1 of 6, the 13-round 2 of 6, the first edition 3 of 6, read by the
# judges of their time): which way a translation goes is its
# seed's coin toss (docs/toyworld.md, "The word picks the axis, the seed the direction"); what this guards is an
# adapter that moves clips at all, coherently
COHERENCE_MAX = 0.3
# Second edition (13 rounds), these prompts and seeds: striped_ball spelled out 0.96 (class word 0.30; read by the
# judge stage's judge 0.89 and 0.30; the 7-round model 0.84 and 0.29); 'next to' on 8 prompts: the lowest of subject
# class and colour, second object class and colour 1.00 (the judge stage's judge: 0.875). The 14-round model by the
# shipped judge: spelled out 0.95 (class word 0.26), 'next to' 0.875 (7 of 8 second objects' class). About a
# quarter (spelled out) and 2 of 8 prompts below.
SPELLED_MIN = 0.70
NEXT_TO_MIN = 0.75


@torch.no_grad()
def test_prompt_editing_changes_only_the_prompts_rows_after_its_step(video_pipe):
    """`drawing --motion-words`: a clip told its own words again after step 2 is the same clip to the pixel (the
    negative prompt's rows kept where they are; without guidance there are none); told the words without the
    motion, a different one."""
    from cdvideo.apps.worldbuild.drawing import words_after

    p = scoring.spelled_prompts(instances.INSTANCES["apple_tree"], 1, clips=True)[0]
    assert scoring.without_motion(p) == "a big green tree with red dots on a blue background" != p.text

    def clip(words: str | None, guidance: float = 5.0) -> np.ndarray:
        switch = dict(callback_on_step_end=words_after(video_pipe, words, 2),
                      callback_on_step_end_tensor_inputs=["prompt_embeds"]) if words else {}
        return video_pipe(p.text, num_frames=4, num_inference_steps=4, guidance_scale=guidance, output_type="np",
                          generator=torch.Generator().manual_seed(0), **switch).frames[0]
    plain = clip(None)
    assert np.array_equal(clip(p.text), plain)
    assert np.abs(clip(scoring.without_motion(p)) - plain).mean() > 1e-3
    assert np.array_equal(clip(p.text, guidance=1.0), clip(None, guidance=1.0))
