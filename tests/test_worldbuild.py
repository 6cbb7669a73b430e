"""The miniature world's build as a package: plans hold every hyper-parameter, a stage runs from its plan alone and
records it, and the same plan and seed give the same weights, bitwise."""

import argparse
import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from cdvideo.apps.worldbuild import judge, judge_clips, judge_motion, judge_twins
from cdvideo.apps.worldbuild.__main__ import TRAINED, finished
from cdvideo.apps.worldbuild.common import base_digest, mark_done, study_run
from cdvideo.apps.worldbuild.spl_strength import study_main
from cdvideo.apps.worldbuild.plans import (PROFILES, Finish, JudgeClipsPlan, JudgeMotionPlan, JudgePlan,
                                           JudgeTwinsPlan, Renders, parse_rounds, plans_for, round_data)
from cdvideo.errors import CdvideoError
from cdvideo.tasks import train as train_task
from cdvideo.toyworld import judge as J
from conftest import tiny_unet

SMALL = JudgePlan(steps=3, batch=20, head_steps=2, head_batch=4, identity_renders=1,
                  renders=(Renders("judge_images", 40, 101, clip=False, exclude=False),
                           Renders("judge_clips", 12, 102, clip=True, exclude=False),
                           Renders("judge_spins", 12, 105, clip="spinning", exclude=False)),
                  tests=(Renders("judge_test_images", 10, 103, clip=False, exclude=False),
                         Renders("judge_test_clips", 4, 104, clip=True, exclude=False)))


def test_plans_scale_every_stage_and_keep_the_rest():
    p = plans_for("cpu", 0.01)
    assert (p.judge.steps, p.text.steps, p.vae.steps) == (50, 8, 30)
    assert p.unet.rounds == ((15, 1.0),) * 4 + ((15, 4.0),) * 9 + ((15, 4.0, Finish()),)  # weights, finish kept
    assert p.motion.rounds == ((20, "min-snr+sizes"), (20, "min-snr+sizes"), (15, "high-noise+sizes"))
    assert p.judge.head_steps == PROFILES["cpu"].judge.head_steps  # the motion head's steps are not scaled
    assert p.judge_clips.steps == 40 and p.judge_clips.clips == PROFILES["cpu"].judge_clips.clips
    assert p.judge_clips.judge == p.judge  # the judge it goes on from: the scaled one
    assert p.judge_twins.steps == 30 and p.judge_twins.judge_clips == p.judge_clips
    assert p.judge_motion.judge_twins == p.judge_twins and p.judge_motion.head_steps == 800  # a head's: not scaled
    assert dataclasses.replace(p.unet, rounds=((1500, 1.0),) * 4 + ((1500, 4.0),) * 9 + ((1500, 4.0, Finish()),)) \
        == PROFILES["cpu"].unet
    assert plans_for("cuda").unet.batch == 256 and plans_for("cuda").motion.device == "cuda"
    assert plans_for("cpu", rounds=parse_rounds("10,5:high-noise")).motion.rounds == ((10, "min-snr"),
                                                                                       (5, "high-noise"))
    with pytest.raises(ValueError, match="is not STEPS"):
        parse_rounds("10:fast")
    assert parse_rounds("4000,500:late,20:late+backwards,30:min-snr+short") == (
        (4000, "min-snr"), (500, "late"), (20, "late+backwards"), (30, "min-snr+short"))
    assert round_data("late+backwards") == ("late", "+backwards") and round_data("min-snr") == ("min-snr", None)
    with pytest.raises(ValueError, match="is not STEPS"):
        parse_rounds("10:short")


def test_short_clips_are_the_pretraining_clips_with_their_translations_along_short_sweeps(tmp_path):
    """A "+short" motion round's renders (clip="short") draw the same scenes as the clips they stand beside, each
    translation along a short sweep from about the centre, and cache them like any rendered set."""
    from cdvideo.apps.worldbuild.common import render_set
    from cdvideo.toyworld import world

    (clips, across), (short, swept) = (render_set(tmp_path, Renders(name, 12, 2, clip=c), 0)
                                       for name, c in (("clips", True), ("clips_short", "short")))
    moving = [i for i, s in enumerate(across) if s.motion in world.TRANSLATIONS]
    assert moving and [world.with_sweep(s, "short") for s in across] == swept
    assert all(swept[i].sweep == "short" and not np.array_equal(short[i], clips[i]) for i in moving)
    assert all(np.array_equal(short[i], clips[i]) for i in range(12) if i not in moving)
    assert render_set(tmp_path, Renders("clips_short", 12, 2, clip="short"), 0)[1] == swept  # from the cache


def test_a_short_round_renders_and_encodes_its_clips_once_beside_the_pretraining_clips(tmp_path):
    """`motion.clip_data`: a "+short" round's clips are rendered and encoded with the build's VAE the first time
    and read back after; a plain round's are the pretraining clips, the same scenes without the short sweeps."""
    from diffusers import AutoencoderKL

    from cdvideo.apps.worldbuild import motion
    from cdvideo.apps.worldbuild.common import VAE
    from cdvideo.apps.worldbuild.plans import MotionPlan
    from cdvideo.apps.worldbuild.vae import encode_clips
    from cdvideo.toyworld import world

    vae = AutoencoderKL(**VAE).eval()
    vae.save_pretrained(str(tmp_path / "vae"))
    plan = MotionPlan(renders=(Renders("images", 2, 1, clip=False), Renders("clips", 3, 2, clip=True)))
    short = Renders("clips_short", 3, 2, clip="short")
    first = motion.clip_data(tmp_path, 0, plan, short)
    assert first["latents"][0].shape == (3, 16, 4, 16, 16) and first["scale"] == vae.config.scaling_factor
    again = motion.clip_data(tmp_path, 0, plan, short)
    assert np.array_equal(again["latents"][0], first["latents"][0]) and again["clip_scenes"] == first["clip_scenes"]
    assert any(s.sweep == "short" for s in first["clip_scenes"])
    clips = motion.pretraining(tmp_path, 0, plan.renders)[2]
    encode_clips(vae, clips, tmp_path, "clips")
    plain = motion.clip_data(tmp_path, 0, plan)
    assert [world.with_sweep(s, "short") for s in plain["clip_scenes"]] == first["clip_scenes"]


def test_a_late_motion_round_draws_only_high_timesteps():
    """A "late" round (motion.LATE_FROM and up) sees only the noise levels where the caption decides a clip's
    direction; the other weightings draw from the whole schedule, as before (a saved round's batches stay the
    same)."""
    from diffusers import DDPMScheduler

    from cdvideo.apps.worldbuild.common import MOTION_SCHEDULE
    from cdvideo.apps.worldbuild.motion import LATE_FROM
    from cdvideo.apps.worldbuild.unet import noised

    sched, x0 = DDPMScheduler(**MOTION_SCHEDULE), torch.zeros(256, 4, 2, 2)
    late = noised(x0, sched, torch.Generator().manual_seed(0), 5.0, LATE_FROM)["t"]
    whole = noised(x0, sched, torch.Generator().manual_seed(0), 5.0)["t"]
    assert late.min() >= LATE_FROM and whole.min() < LATE_FROM < whole.max()
    assert whole.equal(noised(x0, sched, torch.Generator().manual_seed(0), 5.0, 0)["t"])


def test_a_stage_runs_from_its_plan_records_it_and_repeats_bitwise(tmp_path):
    """The judge stage on tiny datasets given by its plan: the record holds the plan; a second build is bitwise
    the first, and another seed is not."""
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    for work, seed in ((a, 0), (b, 0), (c, 1)):
        work.mkdir()
        judge.run(work, seed, SMALL)
    record = json.loads((a / "judge.done").read_text())
    assert record["plan"] == json.loads(json.dumps(dataclasses.asdict(SMALL)))
    assert record["plan"]["optim"]["lr"] == 2e-3 and record["plan"]["renders"][0]["n"] == 40
    wa, wb, wc = (load_file(w / "judge.safetensors") for w in (a, b, c))
    assert wa.keys() == wb.keys() and all(wa[k].equal(wb[k]) for k in wa)
    assert not all(wa[k].equal(wc[k]) for k in wa)


def test_the_clip_judges_go_on_from_the_stage_before_and_record_both_judges_readings(tmp_path):
    """judge_clips starts from the judge stage's weights, trains on its own moving clips, and records what both
    judges read on the same fresh renders (the instances' own clips among them); judge_twins goes on from it with
    its pairs, and judge_motion from that with its motion head alone trained on again; the same seed, the same
    weights."""
    plan = JudgeClipsPlan(steps=3, clips=Renders("judge_clips_more", 12, 106, clip=True, exclude=False),
                          world_clips=1, judge=SMALL)
    twins = JudgeTwinsPlan(steps=3, pairs=2, clip_frames=4, judge_clips=plan,
                           twins=Renders("judge_twins", 8, 107, clip="twins", exclude=False))
    motion = JudgeMotionPlan(head_steps=3, sweeps_per_motion=1, judge_twins=twins,
                             swept=Renders("judge_middle", 8, 108, clip="middle", exclude=False))
    for work in (tmp_path / "a", tmp_path / "b"):
        work.mkdir()
        judge.run(work, 0, SMALL)
        info = judge_clips.run(work, 0, plan)
        then = judge_twins.run(work, 0, twins)
        last = judge_motion.run(work, 0, motion)
    record = json.loads((tmp_path / "a" / "judge_clips.done").read_text())
    assert record["plan"]["judge"]["renders"][0]["n"] == 40 and record["plan"]["clips"]["n"] == 12
    for found in (info, info["judge_stage"]):
        assert set(found["instance_clips"]) == set(found["instances"]) and len(found["instances"]) == 6
        assert set(found["clip_frames"]) == {"cls", "colour", "pattern", "pattern_colour"}
    first, a, b = (load_file(w) for w in (tmp_path / "a" / "judge.safetensors", tmp_path / "a" /
                                          "judge_clips.safetensors", tmp_path / "b" / "judge_clips.safetensors"))
    assert a.keys() == first.keys() and all(a[k].equal(b[k]) for k in a)
    assert not all(a[k].equal(first[k]) for k in a)
    assert then["judge_clips_stage"] == {k: info[k] for k in then["judge_clips_stage"]}  # read on the same renders
    assert json.loads((tmp_path / "a" / "judge_twins.done").read_text())["plan"]["twins"]["clip"] == "twins"
    ta, tb = (load_file(tmp_path / w / "judge_twins.safetensors") for w in "ab")
    assert all(ta[k].equal(tb[k]) for k in ta) and not all(ta[k].equal(a[k]) for k in ta)
    ma, mb = (load_file(tmp_path / w / "judge_motion.safetensors") for w in "ab")
    assert all(ma[k].equal(mb[k]) for k in ma)
    head = {k for k in ma if k.startswith(("frame_proj.", "motion_head."))}
    assert head and all(ma[k].equal(ta[k]) for k in ma.keys() - head)  # every trait reads as judge_twins' did
    assert not all(ma[k].equal(ta[k]) for k in head)
    assert len(last["sweeps_read_as_their_motion"]) == 8  # 4 sweeps: translations, size changes
    assert last["judge_twins_stage"].keys() == last.keys() - {"judge_twins_stage", "seconds"}
    assert json.loads((tmp_path / "a" / "judge_motion.done").read_text())["plan"]["swept"]["clip"] == "middle"


def test_the_twins_judge_reads_moving_frames_beside_their_colours_swapped(tmp_path):
    """judge_twins' pairs are a two-coloured moving clip and the same clip with its colours exchanged (the object's
    pixels differ, its place does not), and a batch takes both of a pair at one frame."""
    from cdvideo.apps.worldbuild.common import render_set
    from cdvideo.apps.worldbuild.judge import frames_of

    twins, scenes = render_set(tmp_path / "r", Renders("judge_twins", 8, 107, clip="twins", exclude=False), 0)
    alpha = np.load(tmp_path / "r" / "judge_twins_alpha.npy")  # where the objects are
    for k in range(4):
        a, b = scenes[2 * k], scenes[2 * k + 1]
        assert a.pattern_colour and a.motion not in ("still", "spinning") and b == a.colours_swapped()
        assert np.array_equal(alpha[2 * k], alpha[2 * k + 1]) and not np.array_equal(twins[2 * k], twins[2 * k + 1])
    ci, fi = frames_of(twins, 6, np.random.default_rng(0), paired=True)
    assert (ci[::2] % 2 == 0).all() and (ci[1::2] == ci[::2] + 1).all() and (fi[::2] == fi[1::2]).all()


def test_a_study_does_not_go_on_from_rows_another_judge_read(tmp_path):
    """A study's rows name the judge that read them: a rerun with another judge stops in one line, naming the file,
    instead of skipping those runs; --report still tabulates them."""
    rows, ran = tmp_path / "claim_rows.jsonl", []
    rows.write_text(json.dumps({"tag": "striped_ball-base", "identity": 0.3}) + "\n")  # no judge: an older study's
    args = argparse.Namespace(docs=str(tmp_path), noise=False, report=False)
    with pytest.raises(SystemExit, match=r"claim_rows.jsonl holds 1 rows read by another judge.*--report"):
        study_main(args, None, lambda a, j: ran.append(j), rows.name, lambda r, d: ran.append(r))
    assert ran == []
    study_main(argparse.Namespace(**{**vars(args), "report": True}), None, None, rows.name, lambda r, d: ran.append(r))
    rows.write_text(json.dumps({"tag": "striped_ball-base", "judge": J.load().digest}) + "\n")
    study_main(args, None, lambda a, j: ran.append(j.digest), rows.name, lambda r, d: None)
    assert ran[0][0]["identity"] == 0.3 and ran[1] == J.load().digest


def test_the_claim_studys_recipe_run_is_the_shipped_config_and_the_maskless_one_the_record(tmp_path, monkeypatch):
    """`claim --recipe masked` (the default) trains its recipe strength exactly as configs/train/toyworld.yaml does
    (subject masks, 5e-4 x 120), its ClassDiffusion arm at the SPL weight the study compares (1, the schema's, where
    the shipped recipe has 0.1); `--recipe maskless` as the record before masks (1e-3, no masks), with class images
    from one shared folder."""
    from cdvideo.apps.worldbuild import claim
    from cdvideo.data.config import load_train_config, to_dict
    from cdvideo.toyworld.instances import INSTANCES

    seen = []
    monkeypatch.setattr(train_task, "train", lambda cfg: seen.append(cfg) or tmp_path / "w.safetensors")
    inst = INSTANCES["striped_ball"]
    for name, arm in (("masked", "ClassDiffusion"), ("maskless", "Custom Diffusion + prior")):
        recipe = claim.RECIPES[name]
        claim.train_arm(inst, tmp_path / name, arm, recipe.itself, 0, tmp_path / "class", recipe)
    masked, maskless = seen
    shipped = load_train_config(Path(__file__).parents[1] / "configs/train/toyworld.yaml",
                                values={"output_dir": str(tmp_path / "masked"), "overwrite": True})
    assert {k: v for k, v in to_dict(masked).items() if k not in ("seed", "spl")} == \
        {k: v for k, v in to_dict(shipped).items() if k not in ("seed", "spl")}
    assert (masked.spl.weight, shipped.spl.weight, masked.spl.pooling) == (1.0, 0.1, shipped.spl.pooling)
    assert (maskless.concepts[0].masks, maskless.optimizer.learning_rate, maskless.max_steps) == (None, 1e-3, 120)
    assert (maskless.prior.enabled, maskless.prior.class_images, maskless.spl.weight) == (True, str(tmp_path / "class"),
                                                                                           0.0)
    assert claim.RECIPES["masked"].docs != claim.RECIPES["maskless"].docs  # one recipe's rows a file


def test_a_studys_cached_run_is_reused_only_on_the_unet_it_was_trained_on(tmp_path, monkeypatch):
    """The studies cache each run's weights by instance, setting and seed; a run trained on another UNet (the base
    model changed since) is trained again, not read on the new one."""
    model = tmp_path / "model"
    (model / "unet").mkdir(parents=True)
    (model / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"round 13")
    out, trained = tmp_path / "run", []

    def fake_train(cfg):
        trained.append(cfg)
        (out / "weights.safetensors").write_bytes(b"k/v")
        return out / "weights.safetensors"

    monkeypatch.setattr(train_task, "train", fake_train)
    out.mkdir()
    assert study_run(out, lambda: "config", str(model)) == out / "weights.safetensors" and trained == ["config"]
    study_run(out, lambda: "config", str(model))
    assert len(trained) == 1  # the same UNet: reused
    (model / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"round 14")
    study_run(out, lambda: "config", str(model))
    assert len(trained) == 2 and (out / "base.txt").read_text().strip() == base_digest(str(model))
    (out / "base.txt").unlink()  # a run that does not say which UNet it was trained on: trained again
    study_run(out, lambda: "config", str(model))
    assert len(trained) == 3


def test_the_build_command_refuses_an_unknown_stage_in_one_line(tmp_path):
    r = subprocess.run([sys.executable, "-m", "cdvideo.apps.worldbuild", "--stage", "unet,paint",
                        "--work", str(tmp_path / "w")], capture_output=True, text=True)
    assert r.returncode == 2 and "unknown stage paint" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "w").exists()


def test_the_drawing_measurement_refuses_a_missing_judge_in_one_line(tmp_path, monkeypatch, capsys):
    from cdvideo.apps.worldbuild import drawing

    out = tmp_path / "m.json"
    monkeypatch.setattr(sys, "argv", ["drawing", "--judge", str(tmp_path / "judge.safetensors"), "--out", str(out)])
    with pytest.raises(SystemExit) as e:
        drawing.main()
    assert e.value.code == 2 and "--judge" in capsys.readouterr().err and not out.exists()


def test_a_finished_stage_is_skipped_and_another_plans_record_is_refused(tmp_path):
    """A committed stage's record lets a later sitting go on after it, but only for the same plan."""
    plans = plans_for("cpu")
    assert not finished(tmp_path, "judge", plans)
    mark_done(tmp_path, "judge", {"seconds": 1}, plans.judge)
    assert finished(tmp_path, "judge", plans)
    with pytest.raises(CdvideoError, match=r"judge.done was made with another plan.*--stage judge"):
        finished(tmp_path, "judge", plans_for("cpu", 0.5))



def test_the_committed_build_is_the_cpu_profiles_finished_build():
    """toyworld-build/ as committed: every training stage's record holds the cpu profile's plan (`--stage all` goes
    on to export), the UNet's widths among it, and the motion and ControlNet stages name the committed UNet."""
    work, plans = Path(__file__).parents[1] / "toyworld-build", plans_for("cpu")
    assert all(finished(work, stage, plans) for stage in TRAINED)
    unet = json.loads((work / "unet" / "config.json").read_text())
    assert tuple(unet["block_out_channels"]) == plans.unet.widths == (32, 64, 96, 96)


def test_a_motion_round_is_saved_whole_and_found_again_by_the_same_plan_only(tmp_path):
    """The motion stage's rounds go through the same record as the UNet's: the motion modules after a round, found
    again by a build of the same plan over the same UNet, not by one whose rounds begin otherwise, nor once the
    UNet has been trained further."""
    from diffusers import MotionAdapter, UNetMotionModel

    from cdvideo.apps.worldbuild import motion
    from cdvideo.apps.worldbuild.common import Curve
    from cdvideo.apps.worldbuild.plans import MotionPlan

    unet = tiny_unet()
    unet.save_pretrained(str(tmp_path / "unet"))
    adapter = MotionAdapter(block_out_channels=(8, 8), motion_layers_per_block=1, motion_num_attention_heads=2,
                            motion_norm_num_groups=4, motion_max_seq_length=8)
    model, plan = UNetMotionModel.from_unet2d(unet, adapter), MotionPlan(rounds=((4, "min-snr"), (2, "high-noise")))
    curve = Curve(tmp_path, "motion")
    curve.add(3, loss=0.25)
    motion.save_round(tmp_path, model, 0, plan, [(4, "min-snr")], curve)
    done, again = motion.resume(tmp_path, 0, plan)
    assert (done, again.values) == (1, [{"step": 3, "loss": 0.25}])
    saved = MotionAdapter.from_pretrained(str(tmp_path / "motion.round"))
    assert all(a.equal(b) for a, b in zip(saved.parameters(), adapter.parameters()))
    assert motion.resume(tmp_path, 0, MotionPlan(rounds=((4, "high-noise"),)))[0] == 0
    with torch.no_grad():
        next(unet.parameters()).add_(1e-3)  # the UNet trained further: its motion rounds are not this one's
    unet.save_pretrained(str(tmp_path / "unet"))
    assert motion.resume(tmp_path, 0, plan)[0] == 0


def test_a_backwards_round_pairs_each_clip_with_itself_played_backwards_under_the_opposite_word():
    """A "backwards" motion round's batch: each clip beside its frames reversed, the same timestep and reversed
    noise, captioned with the opposite motion; the world draws such a clip exactly (`played_backwards`)."""
    from diffusers import DDPMScheduler

    from cdvideo.apps.worldbuild.common import MOTION_SCHEDULE
    from cdvideo.apps.worldbuild.motion import batch_at
    from cdvideo.apps.worldbuild.plans import MotionPlan
    from cdvideo.models.architectures import tokenizer_dir
    from cdvideo.toyworld import draw, world
    from transformers import CLIPTokenizer

    rng = np.random.default_rng(5)
    scenes = [world.with_motion(world.sample_scene(rng), rng, m) for m in ("up", "left", "growing")]
    for s in scenes:
        assert np.array_equal(draw.render(world.played_backwards(s)), draw.render(s)[::-1])
    data = dict(clip_scenes=scenes[:2], latents=(rng.normal(size=(2, 16, 4, 2, 2)), np.full((2, 16, 4, 2, 2), 0.1)),
                sched=DDPMScheduler(**MOTION_SCHEDULE), scale=0.7)
    tok = CLIPTokenizer.from_pretrained(str(tokenizer_dir()))
    plan = MotionPlan(clips_per_batch=4, caption_drop=0.0)
    b = batch_at(3, 0, data, plan, tok, backwards=True)  # both clips, then both backwards
    assert b["noisy"].shape == (4, 4, 16, 2, 2) and b["t"][:2].equal(b["t"][2:])
    assert b["noisy"][2:].equal(b["noisy"][:2].flip(2)) and b["noise"][2:].equal(b["noise"][:2].flip(2))
    words = [tok.decode(ids, skip_special_tokens=True) for ids in b["ids"]]
    assert "moving up" in words[0] and "moving left" in words[1], words
    assert "moving down" in words[2] and "moving right" in words[3], words
    plain = batch_at(3, 0, dict(data, clip_scenes=scenes[:2] * 2, latents=[np.tile(a, (2, 1, 1, 1, 1))
                                                                             for a in data["latents"]]), plan, tok)
    assert plain["noisy"].shape == (4, 4, 16, 2, 2) and not plain["t"][:2].equal(plain["t"][2:])


def test_a_stage_over_the_unet_is_trained_again_when_the_unet_changed(tmp_path):
    """`--stage all` skips a finished motion or ControlNet stage only if its record names the UNet now in the
    build folder (the UNet's rounds went on: the motion modules learnt over the old one are not finished)."""
    from cdvideo.apps.worldbuild.common import unet_digest

    plans, unet = plans_for("cpu"), tiny_unet()
    unet.save_pretrained(str(tmp_path / "unet"))
    for stage in ("motion", "controlnet"):
        mark_done(tmp_path, stage, {"unet": unet_digest(tmp_path)}, getattr(plans, stage))
        assert finished(tmp_path, stage, plans)
    with torch.no_grad():
        next(unet.parameters()).add_(1e-3)
    unet.save_pretrained(str(tmp_path / "unet"))
    assert not finished(tmp_path, "motion", plans) and not finished(tmp_path, "controlnet", plans)
    mark_done(tmp_path, "judge", {}, plans.judge)
    assert finished(tmp_path, "judge", plans)  # stages before the UNet do not look at it


def test_the_claim_report_pairs_arms_and_measures_the_share_of_the_ceiling(tmp_path):
    """The four-arm study's summary on rows whose answer is known: ClassDiffusion composes 0.1 better than Custom
    Diffusion on every (instance, seed), by kind where it does; an instance halfway from base to ceiling reads 0.5,
    and so does each prompt kind."""
    from cdvideo.apps.worldbuild.claim_report import KINDS, NOISE, summary, write_report

    def row(instance, seed, arm, comp, ident, **kind_comp):
        per = {f"composition_{k}": kind_comp.get(k, comp) for k in KINDS} | {f"identity_{k}": ident for k in KINDS}
        return {"instance": instance, "held_out": False, "seed": seed, "strength": "1e-3 x 120", "arm": arm,
                "composition": comp, "identity": ident, "drift": 0.0, **per}

    rows = [{k: v for k, v in row(i, 0, "", 0.9, 0.3).items() if k not in ("seed", "strength", "arm")}
            | {"setting": "base"} for i in ("a", "b")]
    rows += [{"instance": i, "setting": "spelled out", **{f"identity_{k}": 0.9 for k in KINDS}} for i in ("a", "b")]
    for i, seed in [(i, s) for i in ("a", "b") for s in (0, 1)]:
        jitter = 0.01 * seed + (0.02 if i == "b" else 0.0)
        rows += [row(i, seed, "Custom Diffusion", 0.5 + jitter, 0.6, accessory=0.2),
                 row(i, seed, "ClassDiffusion", 0.6 + jitter, 0.6, accessory=0.7)]
    s = summary(rows)
    p = s["paired"]["1e-3 x 120 | ClassDiffusion - Custom Diffusion"]
    assert (p["pairs"], p["instances"]) == (4, 2) and p["composition"] == pytest.approx((0.1, 0.1, 0.1), abs=1e-9)
    assert p["composition_accessory"][0] == pytest.approx(0.5) and p["subject identity"][0] == pytest.approx(0.0)
    m = s["matched"]["ClassDiffusion 1e-3 x 120 - Custom Diffusion 1e-3 x 120"]  # the only setting: its own match
    assert m["composition"][0] == pytest.approx(0.1) and m["subject identity"][0] == pytest.approx(0.0)
    share = s["recovery"]["1e-3 x 120 | ClassDiffusion"]
    assert {n: round(v["share"], 6) for n, v in share.items()} == {"a": 0.5, "b": 0.5}
    by_kind = s["kind shares"]["1e-3 x 120 | ClassDiffusion"]  # each kind that keeps the subject, halfway
    assert by_kind == pytest.approx({k: 0.5 for k in KINDS if k != "property"})
    noise = {k: {"mean": 0.5, "sd": 0.03} for k in ("identity", "composition", *(f"composition_{k}" for k in KINDS))}
    (tmp_path / NOISE).write_text(json.dumps({"run": "a", "repeats": 4, "metrics": noise}))
    write_report(rows, tmp_path)
    md = (tmp_path / "claim.md").read_text()
    assert "+0.100 [+0.100, +0.100] *" in md and (tmp_path / "claim.png").is_file()
    assert "noise" in md and "identity 0.030, composition 0.030" in md  # the scorer's own noise, when measured
