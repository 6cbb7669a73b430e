"""The miniature world's build as a package: plans hold every hyper-parameter, a stage runs from its plan alone and
records it, and the same plan and seed give the same weights, bitwise."""

import dataclasses
import json
import subprocess
import sys

import pytest
from safetensors.torch import load_file

from cdvideo.apps.worldbuild import judge
from cdvideo.apps.worldbuild.plans import PROFILES, JudgePlan, Renders, parse_rounds, plans_for

SMALL = JudgePlan(steps=3, batch=20, head_steps=2, head_batch=4,
                  renders=(Renders("judge_images", 40, 101, clip=False, exclude=False),
                           Renders("judge_clips", 12, 102, clip=True, exclude=False),
                           Renders("judge_spins", 12, 105, clip="spinning", exclude=False)),
                  tests=(Renders("judge_test_images", 10, 103, clip=False, exclude=False),
                         Renders("judge_test_clips", 4, 104, clip=True, exclude=False)))


def test_plans_scale_every_stage_and_keep_the_rest():
    p = plans_for("cpu", 0.01)
    assert (p.judge.steps, p.text.steps, p.vae.steps, p.unet.steps) == (16, 5, 16, 28)
    assert p.motion.rounds == ((40, "min-snr"), (15, "high-noise"))
    assert p.judge.head_steps == PROFILES["cpu"].judge.head_steps  # the motion head's steps are not scaled
    assert dataclasses.replace(p.unet, steps=2800) == PROFILES["cpu"].unet
    assert plans_for("cuda").unet.batch == 256 and plans_for("cuda").motion.device == "cuda"
    assert plans_for("cpu", rounds=parse_rounds("10,5:high-noise")).motion.rounds == ((10, "min-snr"),
                                                                                       (5, "high-noise"))
    with pytest.raises(ValueError, match="is not STEPS"):
        parse_rounds("10:fast")


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


def test_the_build_command_refuses_an_unknown_stage_in_one_line(tmp_path):
    r = subprocess.run([sys.executable, "-m", "cdvideo.apps.worldbuild", "--stage", "unet,paint",
                        "--work", str(tmp_path / "w")], capture_output=True, text=True)
    assert r.returncode == 2 and "unknown stage paint" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "w").exists()
