"""Motion math and video metrics: MotionDirector's debiasing removes what frames share, LoRA deltas by hand, and
dynamic degree and motion fidelity (Farneback flow) tell motions apart on clips drawn here."""

import numpy as np
import pytest
import torch
from PIL import Image

from cdvideo.math.motion import debias, debiased_temporal_loss, dynamic_degree, flow_track, lora_delta, track_similarity
from cdvideo.models.flow import farneback
from cdvideo.tasks.evaluate import EvalOptions, Scorer


def bar_clip(direction: str, frames: int = 12, size: int = 64, colour=(255, 255, 255), bg=(0, 0, 0)) -> list:
    """A bright square moving across a dark frame: right, left, down, or still."""
    out = []
    for k in range(frames):
        im = np.zeros((size, size, 3), np.uint8) + np.array(bg, np.uint8)
        pos = 8 + round(k * 40 / (frames - 1)) if direction != "still" else 20  # 40 px over the clip
        x, y = {"right": (pos, 24), "left": (size - 16 - pos, 24), "down": (24, pos), "still": (pos, 24)}[direction]
        im[y:y + 12, x:x + 12] = colour
        out.append(Image.fromarray(im))
    return out


def test_debiasing_cancels_what_every_frame_shares():
    """Adding the same appearance to every frame changes the plain loss but not the debiased one (beta = 1 keeps
    sqrt(2) x - x_anchor: a shared offset c becomes (sqrt(2) - 1) c, so compare the gap to the plain loss)."""
    gen = torch.Generator().manual_seed(0)
    pred, target = torch.randn(2, 4, 8, 4, 4, generator=gen), torch.randn(2, 4, 8, 4, 4, generator=gen)
    shared = torch.randn(2, 4, 1, 4, 4, generator=gen) * 3
    x = torch.randn(1, 2, 5, 3, 3, generator=gen)
    assert torch.allclose(debias(x, 2, beta=0.0), x)
    assert torch.allclose(debias(x, 2)[:, :, 2], (2**0.5 - 1) * x[:, :, 2])
    plain0, deb0 = debiased_temporal_loss(pred, target, anchor=3)
    plain1, deb1 = debiased_temporal_loss(pred + shared, target, anchor=3)
    assert plain1 - plain0 > 5 * (deb1 - deb0) > 0  # the shared error weighs (sqrt 2 - 1)^2 = 0.17 as much


def test_lora_delta_by_hand():
    down, up = torch.tensor([[1.0, 2.0]]), torch.tensor([[3.0], [4.0]])
    assert torch.equal(lora_delta(down, up, None).float(), torch.tensor([[3.0, 6.0], [4.0, 8.0]]))
    assert torch.equal(lora_delta(down, up, alpha=0.5, scale=2.0).float(), torch.tensor([[3.0, 6.0], [4.0, 8.0]]))


def test_track_similarity():
    t = np.linspace(0, 1, 16)
    circle = np.stack([np.cos(2 * np.pi * t), np.sin(2 * np.pi * t)], axis=1)
    assert track_similarity(circle, circle * 0.3 + 5) == pytest.approx(1.0)  # place and size do not matter
    assert track_similarity(circle, circle[::-1]) < 0.2  # the other way round
    assert track_similarity(np.c_[t, 0 * t], np.c_[-t, 0 * t]) == pytest.approx(-1.0)
    t8 = np.linspace(0, 1, 8)
    circle8 = np.stack([np.cos(2 * np.pi * t8), np.sin(2 * np.pi * t8)], axis=1)  # fewer frames, same span
    assert track_similarity(circle, np.zeros((16, 2))) == 0.0 and track_similarity(circle, circle8) > 0.95


def test_flow_metrics_tell_motions_apart():
    right, left, down, still = (farneback(bar_clip(d)) for d in ("right", "left", "down", "still"))
    assert dynamic_degree(still) < 0.05 < 1.0 < dynamic_degree(right)  # px per frame at 256 px: the bar moves 12
    tr = flow_track(right)
    assert tr[-1, 0] > 50 and abs(tr[-1, 1]) < 5  # it went right, in 256 px units
    assert track_similarity(tr, flow_track(farneback(bar_clip("right", colour=(255, 0, 0), bg=(0, 0, 90))))) > 0.95
    assert track_similarity(tr, flow_track(left)) < -0.9 and abs(track_similarity(tr, flow_track(down))) < 0.3


def test_eval_scores_dynamic_degree_and_motion_fidelity_of_a_clip(tmp_path):
    """`cdvideo eval --video --motion-references DIR`: fidelity near 1 for the references' motion in other colours,
    negative for the reverse; a still clip has no dynamic degree to speak of."""
    refs = tmp_path / "refs"
    refs.mkdir()
    for k, colour in enumerate([(255, 255, 0), (0, 255, 255)]):
        frames = bar_clip("right", colour=colour)
        frames[0].save(refs / f"r{k}.gif", save_all=True, append_images=frames[1:], duration=125, loop=0)
    scorer = Scorer(EvalOptions(metrics=["none"], motion_references=str(refs)), "cpu")
    same, other, still = (scorer.score(bar_clip(d, 16, colour=(200, 50, 50)), "a square", {})
                          for d in ("right", "left", "still"))
    assert same["motion_fidelity"] > 0.9 and other["motion_fidelity"] < -0.5
    assert same["dynamic_degree"] > 1.0 > 0.05 > still["dynamic_degree"]


def test_a_translation_moves_away_from_its_start_when_it_heads_for_the_far_half():
    """`away_from_start` on `direction` readings: moving right (or up) from the left (bottom) half is away from the
    start, and so is a clip asked to move left that goes right from there; heading back into its own half is not."""
    from cdvideo.toyworld.motions import away_from_start

    assert away_from_start({"motion": "right", "progress": 30.0, "start": 14.0})
    assert away_from_start({"motion": "left", "progress": -30.0, "start": 14.0})  # asked left, went right
    assert not away_from_start({"motion": "right", "progress": 30.0, "start": 50.0})
    assert away_from_start({"motion": "up", "progress": 30.0, "start": 50.0})  # y grows downwards: up from the bottom
    assert not away_from_start({"motion": "down", "progress": 30.0, "start": 50.0})
