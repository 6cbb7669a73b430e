"""The miniature world's UNet stage and its trials: rounds saved whole and gone on from, the object weight, the
trials' draws (pattern share, no twins, contrast captions), the binding probe and the trial base cdvideo loads."""

import json

import torch

from cdvideo.apps.worldbuild.plans import Finish, plans_for
from conftest import tiny_unet


def test_the_unet_has_the_plans_widths_and_the_motion_adapter_follows_the_unet(tmp_path):
    """UNetPlan.widths make a fresh UNet's blocks; the motion stage's adapter takes the widths of the UNet it trains
    over (the shipped 32-64-96-96 UNet and a wider build's alike), so that UNetMotionModel joins them."""
    from cdvideo.apps.worldbuild import motion, unet

    assert tuple(unet.build().config.block_out_channels) == plans_for("cpu").unet.widths
    unet.build(widths=(8, 8, 16, 16)).save_pretrained(str(tmp_path / "unet"))
    model, trainable = motion.build(tmp_path)
    assert tuple(model.config.block_out_channels) == (8, 8, 16, 16)
    assert trainable and all("motion_modules." in n for n, p in model.named_parameters() if p.requires_grad)


def test_a_unet_round_is_saved_whole_and_a_later_sitting_goes_on_after_it(tmp_path):
    """The UNet stage's rounds: the state after a finished round, found again by a build of the same plan and seed
    (not by another plan's, nor another seed's, nor by rounds of another object weight)."""
    from diffusers import UNet2DConditionModel

    from cdvideo.apps.worldbuild import unet
    from cdvideo.apps.worldbuild.common import Curve
    from cdvideo.apps.worldbuild.plans import UNetPlan

    tiny = tiny_unet()
    ema, plan = unet.EMA(tiny, 0.99), UNetPlan(rounds=((4, 1.0), (6, 4.0)))
    ema.step, curve = 4, Curve(tmp_path, "unet")
    curve.add(3, loss=0.5)
    unet.save_round(tmp_path, ema, 0, plan, 1, curve)
    done, ema_step, again = unet.resume_round(tmp_path, 0, plan)
    assert (done, ema_step, again.values) == (1, 4, [{"step": 3, "loss": 0.5}])
    saved = UNet2DConditionModel.from_pretrained(str(tmp_path / "unet.round"))
    assert all(a.equal(b) for a, b in zip(saved.parameters(), tiny.parameters()))
    assert unet.resume_round(tmp_path, 1, plan)[0] == 0  # another seed
    assert unet.resume_round(tmp_path, 0, UNetPlan(rounds=((5, 1.0), (6, 4.0))))[0] == 0  # do not begin with it
    assert unet.resume_round(tmp_path, 0, UNetPlan(rounds=((4, 2.0), (6, 4.0))))[0] == 0  # another object weight
    assert unet.resume_round(tmp_path, 0, UNetPlan(rounds=((4, 1.0),), batch=8))[0] == 0  # another plan
    assert not list(tmp_path.glob(".unet.round.tmp-*"))


def test_more_unet_rounds_go_on_after_the_profiles_fourteen(tmp_path):
    """`--unet-rounds 16`: the profile's 14 rounds (the 14th its finishing round, annealed, with the contrast
    captions) and its last one twice more; the 14-round plan went on after the 13 rounds committed before it, and
    a saved 14-round state (its finishing round recorded whole) is gone on from; fewer rounds keep the first ones."""
    from cdvideo.apps.worldbuild import unet
    from cdvideo.apps.worldbuild.__main__ import parser
    from cdvideo.apps.worldbuild.common import Curve

    profile, more = plans_for("cpu").unet, plans_for("cpu", unet_rounds=16).unet
    assert len(profile.rounds) == 14 and profile.rounds[6:13] == ((1500, 4.0),) * 7
    assert profile.rounds[13] == (1500, 4.0, Finish()) and Finish().optim.floor == 0 and Finish().contrast[0] > 0
    assert more.rounds == profile.rounds + profile.rounds[-1:] * 2 and more.batch == profile.batch
    assert plans_for("cpu", unet_rounds=7).unet.rounds == profile.rounds[:7]  # the first shipped UNet's plan
    assert parser().parse_args(["--unet-rounds", "16"]).unet_rounds == 16
    tiny = tiny_unet()
    unet.save_round(tmp_path, unet.EMA(tiny, 0.99), 0, plans_for("cpu", unet_rounds=13).unet, 13,
                    Curve(tmp_path, "unet"))
    assert unet.resume_round(tmp_path, 0, profile)[0] == 13
    unet.save_round(tmp_path, unet.EMA(tiny, 0.99), 0, profile, 14, Curve(tmp_path, "unet"))
    assert unet.resume_round(tmp_path, 0, more)[0] == 14
    assert unet.resume_round(tmp_path, 0, plans_for("cpu", unet_rounds=13).unet)[0] == 0  # not a 13-round state
    assert unet.resume_round(tmp_path, 0, plans_for("cpu", 0.5, unet_rounds=16).unet)[0] == 0  # other steps


def test_a_unet_trial_going_on_after_a_saved_round_takes_the_batches_and_ema_step_after_it(tmp_path):
    """`unet_trial train --from`: a trial round after the committed 14 (the last a contrast round, recorded whole)
    starts at step 21,000 (the build's batches for a 15th round, none it trained on) with the saved EMA step; a
    fresh trial has the plan's widths at step 0."""
    from cdvideo.apps.worldbuild import unet, unet_trial
    from cdvideo.apps.worldbuild.common import Curve

    profile, tiny = plans_for("cpu").unet, tiny_unet()
    ema = unet.EMA(tiny, 0.99)
    ema.step = 21_000
    unet.save_round(tmp_path, ema, 0, profile, 14, Curve(tmp_path, "unet"))
    model, step, ema_step = unet_trial.start(profile, tmp_path / "unet.round", None)
    assert (step, ema_step) == (21_000, 21_000) and all(a.equal(b) for a, b in zip(model.parameters(),
                                                                                     tiny.parameters()))
    fresh, step, _ = unet_trial.start(profile, None, 8)
    assert step == 0 and tuple(fresh.config.block_out_channels) == profile.widths
    assert fresh.config.attention_head_dim == 8


def test_a_unet_stage_whose_rounds_are_all_saved_ends_without_its_datasets(tmp_path):
    """A checkout with the committed rounds but none of the (large, re-renderable) datasets: the stage writes the
    last round's weights as the UNet and its record, rendering nothing."""
    from diffusers import UNet2DConditionModel

    from cdvideo.apps.worldbuild import unet
    from cdvideo.apps.worldbuild.common import Curve
    from cdvideo.apps.worldbuild.plans import UNetPlan

    tiny, plan = tiny_unet(), UNetPlan(rounds=((4, 1.0), (6, 4.0)))
    unet.save_round(tmp_path, unet.EMA(tiny, 0.99), 0, plan, 2, Curve(tmp_path, "unet"))
    assert unet.run(tmp_path, 0, plan)["went_on_after_rounds"] == 2
    shipped = UNet2DConditionModel.from_pretrained(str(tmp_path / "unet"))
    assert all(a.equal(b) for a, b in zip(shipped.parameters(), tiny.parameters()))
    assert json.loads((tmp_path / "unet.done").read_text())["plan"]["rounds"] == [[4, 1.0], [6, 4.0]]
    assert not list(tmp_path.glob("*.npy"))  # nothing rendered


def test_the_object_weight_is_where_the_object_covers_the_latent_pixel():
    """A 64 px coverage map at 16 x 16 latents: weight on covered latent pixels, 1 on the background, in between
    on an edge; weight 1 is the plain min-SNR epsilon loss."""
    from cdvideo.apps.worldbuild.unet import epsilon_loss, object_weights

    alpha = torch.zeros(1, 64, 64)
    alpha[0, :8, :4] = 1.0  # latent pixels (0, 0) and (1, 0) covered, (2, 0) half
    alpha[0, 8:10, :4] = 1.0
    w = object_weights(alpha, 4.0, 4)
    assert w.shape == (1, 1, 16, 16)
    assert (w[0, 0, 0, 0], w[0, 0, 1, 0], w[0, 0, 2, 0], w[0, 0, 3, 0]) == (4.0, 4.0, 2.5, 1.0)
    assert w.sum() == 16 * 16 - 3 + 4 + 4 + 2.5
    pred, noise, snr_w = torch.randn(3, 4, 16, 16), torch.randn(3, 4, 16, 16), torch.rand(3)
    plain = (snr_w * (pred - noise).pow(2).mean(dim=(1, 2, 3))).mean()
    assert torch.allclose(epsilon_loss(pred, noise, snr_w, object_weights(torch.rand(3, 64, 64), 1.0, 4)), plain)


def test_a_trials_pattern_share_draws_that_share_of_patterned_stills_and_the_build_draws_as_before():
    """`unet_trial --pattern-share`: a batch's stills are distinct and patterned in about the asked share; without
    it the build's uniform draw is unchanged, bitwise (the committed rounds' batches)."""
    import numpy as np

    from cdvideo.apps.worldbuild.unet import still_indices

    assert still_indices(np.random.default_rng(5), 40_000, 48).tolist() == \
        np.sort(np.random.default_rng(5).choice(40_000, 48, replace=False)).tolist()
    patterned = np.arange(0, 1000, 5)  # a fifth of the stills
    split = (patterned, np.setdiff1d(np.arange(1000), patterned))
    draws = [still_indices(np.random.default_rng(s), 1000, 48, split, 0.7) for s in range(200)]
    assert all(len(set(d.tolist())) == 48 and (np.diff(d) > 0).all() for d in draws)
    share = np.mean([np.isin(d, patterned).mean() for d in draws])
    assert abs(share - 0.7) < 0.02, share  # uniform: 0.2


def test_a_trial_without_the_twins_never_draws_a_still_or_clip_of_an_instances_colour_swapped_twin():
    """`unet_trial --exclude-twins`: the twin of the yellow ball with purple stripes is the purple ball with yellow
    stripes; a trial's batches hold none of the six twins' stills or clips, and everything else stays, each still
    with its own latents and coverage."""
    import numpy as np

    from cdvideo.apps.worldbuild import unet_trial
    from cdvideo.toyworld.instances import INSTANCES
    from cdvideo.toyworld.world import Scene

    twin = INSTANCES["striped_ball"].swapped()
    assert twin.appearance == ("ball", "purple", "stripes", "yellow") and twin.describe() == \
        "purple ball with yellow stripes"
    assert len(unet_trial.twins()) == 6 and not unet_trial.twins() & {i.appearance for i in INSTANCES.values()}
    other = Scene("ball", "purple", "stripes", "white", "gray", "centre", "big")
    scenes = [twin.scene("gray", "centre", "big") if i % 3 == 0 else other for i in range(9)]
    ids = np.arange(9, dtype=np.float32)
    data = {"scenes": scenes, "clip_scenes": scenes[:2],
            "latents": ((ids[:, None], ids[:, None]), (ids[:2, None], ids[:2, None])),
            "alpha": (ids[:, None], ids[:2, None])}
    kept = unet_trial.without(data, unet_trial.twins())
    assert kept["scenes"] == [other] * 6 and kept["clip_scenes"] == [other]
    assert kept["latents"][0][0][:, 0].tolist() == [1, 2, 4, 5, 7, 8] == kept["alpha"][0][:, 0].tolist()
    assert kept["latents"][1][1][:, 0].tolist() == [1]


def test_a_binding_trials_contrast_is_the_same_caption_with_the_two_colours_exchanged_and_the_draws_unchanged():
    """`unet_trial --contrast`: each caption naming a body and a pattern colour gets its contrast, the same words
    with the colours exchanged; a caption naming one colour, a plain object or a dropped caption gets none; the
    captions and the random stream are the build's (its committed rounds' batches)."""
    import numpy as np

    from cdvideo.apps.worldbuild.unet import captions, captions_with_contrasts
    from cdvideo.toyworld.world import Scene

    scenes = [Scene("ball", "yellow", "stripes", "purple", "gray", "centre", "big", accessory="hat",
                    accessory_colour="purple"), Scene("cup", "red", "plain"), Scene("box", "pink", "rim", "green")] * 40
    a, b = np.random.default_rng(3), np.random.default_rng(3)
    texts, contrasts = captions_with_contrasts(scenes, a, 0.1)
    assert texts == captions(scenes, b, 0.1) and a.random() == b.random()
    assert all(c is None for t, c in zip(texts, contrasts) if t == "" or "cup" in t or " stripes" not in t and
               " rim" not in t)
    pairs = [(t, c) for t, c in zip(texts, contrasts) if c]
    assert 20 < len(pairs) < 70  # two of three scenes, their colours named with p 0.8, the pattern then with 0.8
    for t, c in pairs:
        if "ball" in t:
            assert c.replace("purple ball", "X").replace("yellow stripes", "Y") == \
                t.replace("yellow ball", "X").replace("purple stripes", "Y")  # the hat's colour, if named, stays
        else:
            assert "green box with a pink rim" in c and "pink box with a green rim" in t


def test_the_binding_probe_asks_each_instance_against_its_twin_and_reads_a_gap_of_the_right_sign():
    """`binding`: the instance's spelled-out words against its twin's; a UNet whose output is the noise exactly
    under the own words (and zero under the twin's) reads a positive gap on every render, the noise's mean square."""
    import torch
    from transformers import CLIPTokenizer

    from cdvideo.apps.worldbuild.binding import gaps, words
    from cdvideo.models.architectures import tokenizer_dir
    from cdvideo.toyworld.instances import INSTANCES

    inst = INSTANCES["striped_cup"]
    assert words(inst) == "a big red cup with white stripes" and words(inst.swapped()) == \
        "a big white cup with red stripes"

    tok, noise = CLIPTokenizer.from_pretrained(str(tokenizer_dir())), torch.randn(3, 4, 2, 2)

    def text_encoder(ids):  # token ids as features
        return type("Out", (), {"last_hidden_state": ids.float()[:, :, None]})

    def unet(noisy, t, cond):  # exact under the own words, zero under any other
        own = tok([words(inst)], padding="max_length", max_length=77, return_tensors="pt").input_ids
        return type("Out", (), {"sample": noise if bool((cond[:, :, 0] == own).all()) else noise * 0})

    g = gaps(unet, text_encoder, tok, {"noisy": noise, "t": torch.zeros(3), "noise": noise}, words(inst),
             words(inst.swapped()))
    assert g.shape == (3,) and torch.allclose(torch.from_numpy(g), noise.pow(2).mean(dim=(1, 2, 3)))


def test_the_contrast_caption_loss_is_a_two_way_classifier_of_the_caption():
    """log 2 when both captions explain the latents alike; small when the own caption's error is the lower by much
    more than 1 / beta, about beta x the gap when it is the higher."""
    import math

    import torch

    from cdvideo.math.losses import contrast_caption_loss

    same = torch.tensor([0.02, 0.05])
    assert abs(contrast_caption_loss(same, same, 200.0).item() - math.log(2)) < 1e-6
    assert contrast_caption_loss(torch.tensor([0.01]), torch.tensor([0.06]), 200.0).item() < 1e-4
    assert abs(contrast_caption_loss(torch.tensor([0.06]), torch.tensor([0.01]), 200.0).item() - 10.0) < 1e-3


def test_a_trials_unet_becomes_a_base_that_cdvideo_loads_like_the_shipped_model(tmp_path):
    """`unet_trial model U M`: the shipped model with another UNet (float16, as shipped), which `load_components`
    reads as any base (what `tune --model` personalizes); the shipped parts are copied as they are."""
    from cdvideo.apps.worldbuild import unet, unet_trial
    from cdvideo.models.loading import load_components
    from cdvideo.toyworld import model_dir

    trial = unet.build()  # the world's architecture, freshly initialised: not the shipped weights
    trial.save_pretrained(str(tmp_path / "round1"))
    unet_trial.model_with(tmp_path / "round1", tmp_path / "base")
    m = load_components(str(tmp_path / "base"))
    assert all(a.half().equal(b.half()) for a, b in zip(trial.parameters(), m["unet"].parameters()))
    shipped = load_components(str(model_dir()))
    assert all(a.equal(b) for a, b in zip(shipped["vae"].parameters(), m["vae"].parameters()))
    assert not all(a.equal(b) for a, b in zip(shipped["unet"].parameters(), m["unet"].parameters()))


def test_guiding_away_from_the_twin_is_classifier_free_guidance_plus_the_difference_from_the_twin():
    """swap_guidance's negation at weight 0 is the pipelines' guidance; at weight w it adds w times the prompt's
    prediction minus the twin's, so a twin predicted like the prompt changes nothing."""
    from cdvideo.apps.worldbuild.swap_guidance import away_from

    e_u, e_c, e_n = torch.randn(3, 2, 4, 16, 16)
    assert torch.allclose(away_from(e_u, e_c, e_n, 5.0, 0.0), e_u + 5.0 * (e_c - e_u))
    assert torch.allclose(away_from(e_u, e_c, e_n, 5.0, 3.0), e_u + 5.0 * (e_c - e_u) + 3.0 * (e_c - e_n), atol=1e-5)
    assert torch.allclose(away_from(e_u, e_c, e_c, 5.0, 3.0), e_u + 5.0 * (e_c - e_u), atol=1e-5)


def test_subject_guidance_at_weight_zero_renders_what_the_pipeline_renders_and_its_negative_is_the_class():
    """subject_guidance's plain arm is the demo's own stills (the pipeline, DDIM, the same seeds and steps), so its
    paired differences are against what `tune` reads; its negative is the prompt told the class word alone
    (`strip_tokens`)."""
    import numpy as np

    from cdvideo.apps.worldbuild.swap_guidance import draw_away
    from cdvideo.math.metrics import strip_tokens
    from cdvideo.pipelines.build import image_pipeline
    from cdvideo.pipelines.personalized import load_personalized
    from cdvideo.pipelines.registry import make_scheduler
    from cdvideo.toyworld import MODEL_ID

    assert strip_tokens("a sks tree wearing a red hat on a blue background", ["sks"]) == \
        "a tree wearing a red hat on a blue background"
    m, _, _ = load_personalized(MODEL_ID, [])
    pipe = image_pipeline(m, scheduler=make_scheduler("ddim", m["scheduler"].config, False))
    pipe.set_progress_bar_config(disable=True)
    texts, seeds = ["a red ball on a blue background", "a green tree on the left"], [0, 1]
    ours = np.stack(draw_away(pipe, texts, ["a ball on a blue background", "a tree"], seeds, 0.0, 3))
    theirs = pipe(texts, num_inference_steps=3, guidance_scale=5.0, output_type="np",
                  generator=[torch.Generator().manual_seed(s) for s in seeds]).images  # (2, 64, 64, 3) in [0, 1]
    assert np.abs(ours.astype(np.float32) - theirs * 255).max() <= 1.0  # a rounding apart
    guided = np.stack(draw_away(pipe, texts, ["a ball on a blue background", "a tree"], seeds, 2.0, 3))
    assert np.abs(guided.astype(np.float32) - ours).mean() > 1.0  # the weight moves the images


def test_a_trial_with_more_clips_draws_its_clip_frames_from_them_beside_the_pretraining_clips(tmp_path, monkeypatch):
    """`unet_trial --more-clips`: the clips of `plans.MORE_CLIPS`, rendered and encoded with the build's VAE the
    first time, join the pretraining clips, each with its own latents and coverage; the stills stay as they were."""
    import numpy as np
    from diffusers import AutoencoderKL

    from cdvideo.apps.worldbuild import unet_trial
    from cdvideo.apps.worldbuild.common import VAE, render_set
    from cdvideo.apps.worldbuild.plans import Renders

    AutoencoderKL(**VAE).eval().save_pretrained(str(tmp_path / "vae"))
    more = Renders("clips_more", 3, 9, clip="sizes")
    monkeypatch.setattr(unet_trial, "MORE_CLIPS", more)
    stills, clips = np.ones((5, 4, 16, 16), np.float16), np.zeros((2, 16, 4, 16, 16), np.float16)
    data = {"scenes": list("abcde"), "clip_scenes": ["f", "g"], "latents": ((stills, stills), (clips, clips)),
            "alpha": (np.ones((5, 64, 64), np.uint8), np.zeros((2, 16, 64, 64), np.uint8))}
    got = unet_trial.with_more_clips(data, tmp_path, 0)
    assert got["scenes"] == data["scenes"] and got["latents"][0] is data["latents"][0]
    assert got["clip_scenes"] == ["f", "g", *render_set(tmp_path, more, 0)[1]]
    mean, std = (np.load(tmp_path / f"latents_clips_more_{k}.npy") for k in ("mean", "std"))
    assert got["latents"][1][0].shape == (5, 16, 4, 16, 16) and not got["latents"][1][0][:2].any()
    assert np.array_equal(got["latents"][1][0][2:], mean) and np.array_equal(got["latents"][1][1][2:], std)
    coverage = np.load(tmp_path / "clips_more_alpha.npy")
    assert coverage.any() and np.array_equal(got["alpha"][1][2:], coverage) and not got["alpha"][1][:2].any()
