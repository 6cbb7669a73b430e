"""`cdvideo demo`, personalization measured by the judge, and `cdvideo eval --judge toyworld`."""

import contextlib
import io
import json

import numpy as np
import pytest
from conftest import FIXTURES, ROOT
from PIL import Image

from cdvideo.apps.cli import main
from cdvideo.apps.ui.actions import SMALL_MASKED, SMALL_TRAIN
from cdvideo.apps.demo import (MASKLESS, PROMPT_BACKGROUNDS, RECIPE_ROW, TOKEN, TRAIN, default_prompts,
                               new_folder, still_scores, train_config)
from cdvideo.data.config import load_train_config
from cdvideo.tasks.train import train
from cdvideo.toyworld import instances, world
from cdvideo.toyworld import judge as J
from cdvideo.toyworld.motions import circling_masks, path_error
from cdvideo.toyworld.scoring import asked_in

PERSONAL = FIXTURES / "personal"  # runs trained once and committed: python scripts/make_fixtures.py --only personal


DRIFT_RUN = {**MASKLESS, "optimizer.learning_rate": 6e-3, "seed": 0}  # strong and maskless: the token drifts
FIXTURE_RUNS = {"recipe_spl0": (0.0, {}), "recipe_spl1": (1.0, {}), "drift_spl0": (0.0, DRIFT_RUN),
                "drift_spl1": (1.0, DRIFT_RUN)}  # name: SPL weight, settings over the demo's recipe


@pytest.mark.parametrize("name", FIXTURE_RUNS)
def test_the_fixture_runs_are_what_train_trains_today(name, tmp_path):
    """Each committed run is the one its test names (the demo's steps, its SPL weight and settings), and its first
    steps give its recorded losses: the comparisons below read what today's `cdvideo train` would train (the
    fixtures save the suite's time; they are not a frozen result)."""
    record = json.loads((PERSONAL / f"{name}.json").read_text())
    spl, extra = FIXTURE_RUNS[name]
    assert (record["steps"], record["spl"], record["extra"]) == (TRAIN["max_steps"], spl, extra)
    losses: list[float] = []
    train(train_config(instances.get("striped_ball"), tmp_path / "run", len(record["first_losses"]), spl, extra),
          on_step=lambda step, logs: losses.append(logs["loss"]))
    assert losses == pytest.approx(record["first_losses"], rel=1e-3, abs=1e-5), \
        "cdvideo train's losses changed: if on purpose, rebuild the fixtures (python scripts/make_fixtures.py)"


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    """`cdvideo demo` at its real training setting, one clip per model, one render seed of the stills (26 instead
    of 52: the fixture took 45-66 s in the suite on 2026-12-07, 49-61 s before), without the comparison run (the
    SPL test trains that one): the run's folder and what it printed. On striped_ball, the hardest of the tuning
    instances (the default is spotted_star): the tests below pin the gains where they are smallest, and render a
    ball under the ControlNet."""
    root = tmp_path_factory.mktemp("demo")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["demo", "--instance", "striped_ball", "--without-spl", "never", "--output-dir", str(root),
                     "--still-seeds", "1", "--prompt", "a sks ball moving right on a blue background"]) == 0
    return root, out.getvalue()


def test_the_demos_prompts_never_hide_the_subjects_outline():
    """Each default prompt keeps its background unless the world would hide the instance's outline there (a green
    tree on grass, a green rim on grass; a spot or dots inside the outline show on any background): then another,
    unused, that hides none of it."""
    for name in instances.INSTANCES:
        inst = instances.get(name)
        edges = world.edge_colours(inst.colour, inst.pattern, inst.pattern_colour)
        backgrounds = [asked_in(p)["background"] for p in default_prompts(inst)]
        assert len(set(backgrounds)) == 3 and all(b in world.BACKGROUNDS for b in backgrounds), name
        assert not any(world.clashes(c, b) for c in edges for b in backgrounds), name
        assert all(b == d or any(world.clashes(c, d) for c in edges)
                   for b, d in zip(backgrounds, PROMPT_BACKGROUNDS)), name
    moved = {name: [asked_in(p)["background"] for p in default_prompts(instances.get(name))]
             for name in instances.INSTANCES}
    assert moved["apple_tree"] == moved["rimmed_box"] == ["blue", "gray", "checkered"]
    assert moved["spotted_star"] == moved["dotted_heart"] == list(PROMPT_BACKGROUNDS)  # the spot and dots show on blue


def test_demo_end_to_end(demo_run):
    root, out = demo_run
    run = root / "striped_ball"
    report = json.loads((run / "report.json").read_text())
    rows = report["rows"]
    assert set(rows) == {"base model, class word", RECIPE_ROW} and RECIPE_ROW == "ClassDiffusion (SPL 0.1)"
    judge = J.load()
    for name, r in rows.items():  # the clip numbers are what the judge reads off the saved frames
        folder = run / {"base model, class word": "before"}.get(name, "clips")
        frames = [Image.open(f).convert("RGB") for f in sorted(next(folder.glob("*_frames")).glob("*.png"))]
        assert abs(r["identity"] - J.identity(J.read(judge, frames), instances.get("striped_ball").appearance)) < 1e-6
        assert r["motion"] in (0.0, 1.0) and r["background"] in (0.0, 1.0)
        for key in ("stills identity", "stills composition"):  # 26 stills, with a 95% interval
            lo, hi = r[f"{key} ci"]
            assert 0.0 <= lo <= r[key] <= hi <= 1.0 and hi - lo < 0.4, (key, r)
    md = (run / "report.md").read_text()
    r = rows[RECIPE_ROW]
    assert f"{r['identity']:.2f} [{r['identity ci'][0]:.2f}, {r['identity ci'][1]:.2f}]" in md  # over the clips
    assert f"{r['stills identity']:.2f} [{r['stills identity ci'][0]:.2f}" in md
    assert report["stills"] == 26 and "Stills: 26 images" in md
    assert list((run / "clips").glob("*.mp4")) and list((run / "clips").glob("*.gif"))
    assert (run / "drift.png").is_file() and (run / "run" / "weights.safetensors").is_file()
    gif = next((run / "clips").glob("*.gif"))
    assert Image.open(gif).size == (256, 256)  # enlarged for viewing; the raw frames stay 64 px
    assert Image.open(next((run / "clips").glob("*_frames/0000.png"))).size == (64, 64)
    assert "identity" in out and str(run / "report.md") in out
    assert new_folder(root, "striped_ball") == root / "striped_ball-2"  # the next demo gets a new folder


def test_short_personalization_raises_identity_above_the_base(demo_run):
    """The test that fails if the token or the K/V stop learning: the demo's ClassDiffusion run (120 steps) against
    the base model prompted with the class word, on the demo's 26 stills (the same prompts and seeds)."""
    root, _ = demo_run
    rows = json.loads((root / "striped_ball" / "report.json").read_text())["rows"]
    base, tuned = rows["base model, class word"], rows[RECIPE_ROW]
    assert tuned["stills identity"] > base["stills identity"] + IDENTITY_GAIN, (base, tuned)
    assert tuned["stills identity ci"][0] > base["stills identity ci"][1], (base, tuned)  # the intervals apart


@pytest.fixture(scope="module")
def recipe_stills(demo_run) -> dict:
    """The demo's run (the recipe: subject masks, SPL 0.1) read on the demo's default 52 stills."""
    root, _ = demo_run
    inst = instances.get("striped_ball")
    return still_scores(J.load(), inst, root / "striped_ball" / "run" / "weights.safetensors", f"{TOKEN} {inst.cls}")


def test_spl_keeps_the_stills_composing_at_the_demos_setting(recipe_stills, tmp_path):
    """At the demo's setting, on the demo's seed, SPL's 52 stills compose as well as the same run's without SPL: with
    the subject masks and SPL 0.1 (the recipe) on the 14-round second edition 0.750 and 0.731 at identity 0.74 and
    0.79 (by the judge_clips judge shipped before the judge_twins one: 0.769 and 0.731 at 0.72 and 0.78; SPL 1, the
    recipe before: 0.769 at identity 0.68; the
    13-round one 0.885 and 0.904 at identity 0.57 and 0.60: the 14th round's runs recover more of the instance and
    compose less, with SPL and without); the maskless recipe on the 13-round
    second edition (striped_ball) 0.92 and 0.90, at identity 0.52 and 0.58 (SPL costs identity on this seed; read by
    the judge stage's judge 0.90 and 0.90 at 0.48 and 0.57); on the 7-round model 0.94 against 0.87;
    over the four tuning instances and two seeds (python -m cdvideo.apps.worldbuild.tune, the judge stage's judge)
    0.897 against 0.784 at identity 0.658 and 0.680. The run without SPL is the
    demo's own (`--without-spl always` trains and scores it so; both scored here on the demo's default 52 stills),
    trained once by scripts/make_fixtures.py and committed (`test_the_fixture_runs_are_what_train_trains_today`
    checks its first steps); the margin: 2 of the 52 stills."""
    inst, spl = instances.get("striped_ball"), recipe_stills
    plain = still_scores(J.load(), inst, PERSONAL / "recipe_spl0.safetensors", f"{TOKEN} {inst.cls}")
    assert spl["stills composition"] >= plain["stills composition"] - 2 / 52, (spl, plain)
    assert spl["stills composition"] > 0.70, spl  # 0.750 measured: 39 of 52 stills show what was asked (0.769)


def test_the_recipes_spl_weight_reads_more_of_the_subject_than_spl_1(recipe_stills):
    """The recipe's SPL 0.1 against the schema's 1, at the demo's setting and seed on its 52 stills: identity 0.737
    against 0.709, composition 0.750 against 0.788 (by the judge_clips judge 0.724 against 0.685, 0.769 both; over
    six training seeds on the four tuning instances +0.027 identity and +0.029 composition, that judge:
    docs/toyworld/tuning_spl_weight14.md). Margins: 0.02 of identity (the gap 0.028), 2 of 52 stills (this seed's
    gap is 2 of 52 the other way: at the margin). The SPL 1 run is a committed fixture (scripts/make_fixtures.py)."""
    inst, recipe = instances.get("striped_ball"), recipe_stills
    spl1 = still_scores(J.load(), inst, PERSONAL / "recipe_spl1.safetensors", f"{TOKEN} {inst.cls}")
    assert TRAIN["spl.weight"] == 0.1
    assert recipe["stills identity"] > spl1["stills identity"] + 0.02, (recipe, spl1)
    assert recipe["stills composition"] >= spl1["stills composition"] - 2 / 52, (recipe, spl1)


def test_eval_with_the_judge_for_clips(tmp_path):
    w = train(train_config(instances.get("striped_ball"), tmp_path / "run", 2, 1.0))
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a {token} {class_word} moving right on a blue background\n")
    args = ["eval", "--weights", str(w), "--judge", "toyworld", "--metrics", "none", "--prompts", str(prompts),
            "--seeds", "0", "--video", "--num-frames", "8", "--num-inference-steps", "2",
            "--output-dir", str(tmp_path / "eval")]
    assert main(args) == 0
    summary = json.loads((tmp_path / "eval" / "summary.json").read_text())["overall"]
    assert set(summary) == {"identity", "composition", "dynamic_degree"}  # clips: how much they move, too
    assert 0 <= summary["identity"]["mean"] <= 1 and summary["composition"]["mean"] in (0.0, 0.5, 1.0)
    assert main(args) == 0  # resumable: a second run finds everything generated and scored


def test_shipped_toyworld_config_matches_the_demo():
    cfg = load_train_config(ROOT / "configs/train/toyworld.yaml")
    for key, value in TRAIN.items():
        node = cfg
        for part in key.split("."):
            node = getattr(node, part)
        assert node == value, key
    assert cfg.model == "toyworld" and cfg.concepts[0].images == cfg.concepts[0].masks == "toyworld:striped_ball"
    # the web app's Train tab on a 64 px base trains the same way: without masks at the maskless recipe's rate
    assert SMALL_TRAIN.items() <= {**TRAIN, **MASKLESS}.items()  # the Train tab without masks
    assert {**SMALL_TRAIN, **SMALL_MASKED}.items() <= TRAIN.items()  # with masks from the photos' transparency
    # (and 0 off the subject: a cut-out's background is not the subject's; docs/toyworld/tuning_cutouts0.md)


# Measured on the shipped second edition (14 UNet rounds), the demo's 26 stills, by the shipped judge: base 0.28
# [0.26, 0.31]; after 120 steps with the photos' subject masks and SPL 0.1 (the demo's) 0.79 [0.68, 0.90] (by the
# judge_clips judge 0.29 [0.26, 0.31] and 0.76 [0.65, 0.87]). On the 13 UNet rounds at SPL 1:
# base 0.29 [0.27, 0.31]; with the subject masks 0.69 [0.58, 0.79]; the maskless recipe 0.61 [0.52, 0.72] (read by
# the judge stage's judge 0.29 [0.27, 0.32] and 0.58 [0.47, 0.69]; on
# 52 stills 0.29 and 0.48; the 7-round model, 26 stills: 0.31 and 0.67; the first edition, 8 stills: 0.33 and
# 0.44). The threshold leaves half the smallest measured gain as margin.
IDENTITY_GAIN = 0.15


def test_spl_keeps_the_token_near_its_class_where_plain_tuning_drifts():
    """SPL's effect in text space, pinned on its seed: at a strong learning rate (6e-3, striped_ball, seed 0) the
    token drifts from its class without SPL and stays with it. On the 14-round second edition after 120 steps
    0.069 against 0.053 (the 13-round one 0.083 against 0.053; the 7-round model: 0.099 against 0.051, after 240 0.117
    against 0.054, after 40 level at 0.048 and 0.051; the first edition 0.315 against 0.030 after 240,
    docs/toyworld/first_edition.md). Thresholds leave a third of the gap. On the maskless recipe (`MASKLESS`) where
    it was measured: with the photos' subject masks the plain run does not drift at this rate (0.049 against
    0.050), the background no longer pulling it. Both runs are committed fixtures (scripts/make_fixtures.py)."""
    from cdvideo.tasks.drift import compute, load_source
    from cdvideo.toyworld import drift_phrases

    drift = {spl: compute([load_source(PERSONAL / f"drift_spl{spl}.safetensors")], drift_phrases())["runs"][0]
             ["after"]["distance"] for spl in (0, 1)}
    assert drift[0] > 0.064 and drift[1] < 0.058 and drift[0] - drift[1] > 0.010, drift


def test_video_to_video_keeps_the_source_motion_and_shows_the_subject(demo_run, tmp_path):
    """Clips of other objects circling and zigzagging, restyled as the demo's subject at strength 0.3
    (`animate --video`): they keep the source's motion and show more of the subject than the sources do. On these 4
    clips (the shipped 14-round model and `+sizes` adapter, the recipe's run): motion kept 0.80, identity 0.47
    against the sources' 0.01 (by the judge_clips judge 0.78, 0.40 and 0.02); on the 13-round second edition with
    the maskless recipe's run 0.84, 0.31 and 0.02 (read by the judge stage's judge 0.81, 0.30 and 0.01; the 7-round
    model: 0.78, 0.32; its study's 12 clips: 0.73 [0.66, 0.78], 0.19 against 0.06; python -m
    cdvideo.apps.worldbuild.v2v_study). About half of each as the margin."""
    from cdvideo.apps.worldbuild.v2v_study import restyle, score, source_frames
    from cdvideo.toyworld import motions
    from cdvideo.toyworld.world import NOVEL_MOTIONS

    root, _ = demo_run
    inst, judge = instances.get("striped_ball"), J.load()
    sources = [motions.write_reference_clips(m, tmp_path / "sources", n=1)[0] for m in NOVEL_MOTIONS]
    frames = [source_frames(p) for p in sources]
    clips = restyle(root / "striped_ball" / "run" / "weights.safetensors", "a sks ball", sources, [0.3], [0, 1],
                    tmp_path / "out")
    rows = score(judge, inst, clips, [f for f in frames for _ in (0, 1)])
    kept, ident = np.mean([r["motion_kept"] for r in rows]), np.mean([r["identity"] for r in rows])
    source = np.mean([r["identity"] for r in score(judge, inst, frames, frames)])
    assert kept > 0.5 and ident > source + 0.1, (kept, ident, source)


def test_the_mask_controlnet_moves_the_personal_subject_along_the_path(demo_run, tmp_path):
    """The demo's subject under the world's mask ControlNet (`--weights ... --controlnet toyworld:mask`): the masks
    of a big ball circling (a path pretraining never shows). Measured at these settings (10 steps) on the shipped
    14-round model and `+sizes` adapter with the recipe's run: 3.2 px from the circle, identity 0.77 against the
    base's 0.31 (by the judge_clips judge 3.2 px, 0.75 against 0.29). On the 13-round model with the maskless
    recipe's run: the drawn ball 2.5 px from the circle on average, and recognisable as the subject where the base
    model under the same control is not: identity 0.64 against 0.24 (read by the judge stage's judge: 3.1 px, 0.57
    against 0.17; the 7-round model: 3.9 px, 0.50 against 0.25, 0.61 without the ControlNet; on another scene seed
    3.9 px, 0.41 against 0.18; at 20 steps, docs/toyworld.md: 3.6-3.7 px, 0.40-0.50 against 0.14-0.21). Half the
    7-round identity gap and twice its path error as margins."""
    inst, judge = instances.get("striped_ball"), J.load()
    gif, truth = circling_masks(tmp_path, "big")
    weights = ["--weights", str(demo_run[0] / "striped_ball" / "run" / "weights.safetensors")]
    error, ident = {}, {}
    for name, prompt, extra in (("subject", "a sks ball on a gray background", weights), ("base", "a ball on a gray "
                                "background", [])):
        out = tmp_path / name
        assert main(["animate", "--model", "toyworld", *extra, "--prompt", prompt, "--num-inference-steps", "10",
                     "--seed", "0", "--format", "png", "--output-dir", str(out), "--controlnet", "toyworld:mask",
                     "--control-video", str(gif)]) == 0
        frames = [Image.open(f).convert("RGB") for f in sorted(next(out.glob("*_frames")).glob("*.png"))]
        reading = J.read(judge, frames)
        error[name] = path_error(reading, truth)
        ident[name] = J.identity(reading, inst.appearance)
    assert error["subject"] < 7.8, error
    assert ident["subject"] > ident["base"] + 0.12, ident
