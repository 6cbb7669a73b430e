"""Trials of the UNet stage in a scratch folder, on the build's own data, batches and noise (a batch is a function
of the seed and the step), so that a trial differs from the build's run only in what it changes:

    python -m cdvideo.apps.worldbuild.unet_trial train --out /tmp/wide --widths 48 96 128 128 --rounds 2
    python -m cdvideo.apps.worldbuild.unet_trial train --out /tmp/anneal --from toyworld-build/unet.round \
        --lr 5e-4 --floor 0 --warmup 50
    python -m cdvideo.apps.worldbuild.unet_trial train --out /tmp/alone --from toyworld-build/unet.round \
        --lr 5e-4 --floor 0 --warmup 50 --pattern-alone 1.0
    python -m cdvideo.apps.worldbuild.unet_trial train --out /tmp/share --from toyworld-build/unet.round \
        --lr 5e-4 --floor 0 --warmup 50 --pattern-share 0.7
    python -m cdvideo.apps.worldbuild.unet_trial train --out /tmp/bind --from toyworld-build/unet.round \
        --lr 5e-4 --floor 0 --warmup 50 --contrast 0.005 200
    python -m cdvideo.apps.worldbuild.unet_trial train --out /tmp/more --from toyworld-build/unet.round \
        --lr 5e-4 --floor 0 --warmup 50 --contrast 0.005 200 --more-clips
    python -m cdvideo.apps.worldbuild.unet_trial train --out /tmp/twins --rounds 4 --exclude-twins
    python -m cdvideo.apps.worldbuild.unet_trial train --out /tmp/twins7 --from /tmp/twins/round4 --rounds 3 \
        --exclude-twins
    python -m cdvideo.apps.worldbuild.unet_trial heldout toyworld-build/unet /tmp/wide/round2
    python -m cdvideo.apps.worldbuild.unet_trial model /tmp/twins/round7 /tmp/models/twins7   # for tune --model

`train` runs the plan's first rounds on a fresh UNet (its widths and attention heads as asked), or more rounds of
the plan's last kind (its steps and object weight; the plan's schedule, with `--lr`, `--floor`, `--warmup` when asked)
going on after a saved round (`--from`), and saves each round's EMA weights and its round.json as OUT/round<k>/
(read them with `drawing --unet`; go on after one with `--from`). `--exclude-twins` leaves out of the data every
still and clip of an instance's colour-swapped twin ("a purple ball with yellow stripes"), the neighbour drawn most
often in an instance's place. `--contrast W BETA` adds W x the contrast captions' loss
(`cdvideo.math.losses.contrast_caption_loss` at BETA): every caption naming two colours must explain its latents
better than the same words with the colours exchanged (the build's 14th round: `plans.Finish`). `--more-clips` draws
the clip frames from `plans.MORE_CLIPS` (6,400 more scenes) beside the pretraining's 1,600. `heldout` gives
each UNet's plain epsilon error on 2,000 of the training stills and on 2,000 fresh renders (the same noise and
timesteps), and the paired difference with its 95% interval: whether a UNet over-fits its 40,000 stills. `model`
writes the shipped model with another UNet (in float16, as shipped) as a diffusers folder: a base to personalize
(`tune --model`).
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from cdvideo.apps.worldbuild import unet as U
from cdvideo.apps.worldbuild.common import (SD_SCHEDULE, Curve, log, pretraining, render_set, seed_everything,
                                            to_pixels)
from cdvideo.apps.worldbuild.plans import MORE_CLIPS, PRETRAIN, Finish, Renders, UNetPlan, plans_for, round_record
from cdvideo.data.files import atomic_folder
from cdvideo.data.ranges import Flag, Parser, Range
from cdvideo.math.metrics import bootstrap_ci
from cdvideo.models.text import tokenize
from cdvideo.toyworld.instances import INSTANCES
from cdvideo.toyworld.world import caption

FRESH = Renders("heldout_images", 2000, 107, clip=False)  # stills no stage trains on


def record(saved: Path | None) -> dict:
    """A saved round's round.json (the build's or a trial's: its rounds, EMA step and, a trial's, its data flags);
    an empty record for a fresh start."""
    return json.loads((saved / "round.json").read_text()) if saved else {"rounds": [], "ema_step": 0}


def start(plan: UNetPlan, saved: Path | None, heads: int | None) -> tuple:
    """The UNet to train (fresh with the plan's widths and `heads`, or a saved round's), the first step and the EMA
    step to go on from."""
    if saved is None:
        return U.build(None, plan.widths, heads), 0, 0
    done = record(saved)
    steps = sum(r[0] for r in done["rounds"])  # (steps, object weight[, finish])
    return U.build(saved), steps, done["ema_step"]


def twins() -> frozenset:
    """The appearances of the instances' colour-swapped twins."""
    return frozenset(inst.swapped().appearance for inst in INSTANCES.values())


def without(data: dict, appearances: frozenset) -> dict:
    """`U.training_data` with every still and clip of these appearances left out (the rest read into memory)."""
    k_im = np.array([s.appearance not in appearances for s in data["scenes"]])
    k_cl = np.array([s.appearance not in appearances for s in data["clip_scenes"]])
    (im_mean, im_std), (cl_mean, cl_std) = data["latents"]
    im_alpha, cl_alpha = data["alpha"]
    log(f"unet trial: {(~k_im).sum()} stills and {(~k_cl).sum()} clips of {len(appearances)} appearances left out")
    return {**data, "scenes": [s for s, k in zip(data["scenes"], k_im) if k],
            "clip_scenes": [s for s, k in zip(data["clip_scenes"], k_cl) if k],
            "latents": ((im_mean[k_im], im_std[k_im]), (cl_mean[k_cl], cl_std[k_cl])),
            "alpha": (im_alpha[k_im], cl_alpha[k_cl])}


def with_more_clips(data: dict, work: Path, seed: int) -> dict:
    """`U.training_data` with `plans.MORE_CLIPS` beside the pretraining clips (rendered and encoded the first time),
    all read into memory: a batch's clip frames drawn from 8,000 scenes instead of 1,600."""
    from cdvideo.apps.worldbuild.motion import clip_data  # lazy: one flag needs it

    more = clip_data(work, seed, plans_for("cpu").motion, MORE_CLIPS)
    (im, (cl_mean, cl_std)), (im_alpha, cl_alpha) = data["latents"], data["alpha"]
    (mean, std), alpha = more["latents"], np.load(work / f"{MORE_CLIPS.name}_alpha.npy", mmap_mode="r")
    log(f"unet trial: clip frames from {len(data['clip_scenes'])} + {len(more['clip_scenes'])} clips")
    return {**data, "clip_scenes": data["clip_scenes"] + more["clip_scenes"],
            "latents": (im, (np.concatenate([cl_mean, mean]), np.concatenate([cl_std, std]))),
            "alpha": (im_alpha, np.concatenate([cl_alpha, alpha]))}


def train(work: Path, out: Path, plan: UNetPlan, rounds: int, saved: Path | None = None,
          heads: int | None = None, pattern_alone: float = 0.0, pattern_share: float | None = None,
          exclude_twins: bool = False, contrast: tuple[float, float] | None = None, more_clips: bool = False) -> None:
    """`rounds` rounds of the plan (from a saved round: more of its last kind), each round's EMA in out/round<k>;
    `pattern_alone`: the share of captions without the body colour that name the pattern (`world.describe`);
    `pattern_share`: the share of a batch's stills that wear a pattern (None: drawn uniformly, as the build);
    `exclude_twins`: no still or clip of an instance's colour-swapped twin; `contrast`: (weight, beta) of the
    contrast captions' loss; `more_clips`: clip frames from `plans.MORE_CLIPS` too."""
    seed = 0
    seed_everything(seed)
    unet, step, ema_step = start(plan, saved, heads)
    unet = unet.train().to(memory_format=torch.channels_last)
    ema = U.EMA(unet, plan.ema_decay)
    ema.step = ema_step
    log(f"unet trial: {sum(p.numel() for p in unet.parameters()) / 1e6:.2f}M parameters, from step {step}")
    data, (tokenizer, text_encoder) = U.training_data(work, seed, plan), U.load_text(work)
    if exclude_twins:
        data = without(data, twins())
    if more_clips:
        data = with_more_clips(data, work, seed)
    data["pattern_alone"] = pattern_alone
    if pattern_share is not None:
        patterned = np.array([s.pattern != "plain" for s in data["scenes"]])
        data["pattern_split"] = (np.flatnonzero(patterned), np.flatnonzero(~patterned))  # once, not every step
        data["pattern_share"] = pattern_share
        log(f"unet trial: {patterned.sum()} of {len(patterned)} stills patterned, drawn as {pattern_share}")
    kinds = plan.rounds[:rounds] if saved is None else [plan.rounds[-1][:2]] * rounds  # (steps, object weight)
    if contrast is not None:  # every round a contrast round, on the trial's schedule (as the build's Finish)
        kinds = [(n, w, Finish(plan.optim, contrast)) for n, w, *_ in kinds]
    done = record(saved)["rounds"]
    curve, t0 = Curve(out, "unet"), time.time()
    for k, this_round in enumerate(kinds):
        U.train_round(unet, ema, data, text_encoder, tokenizer, curve, (seed, plan, out), step, this_round)
        step += this_round[0]
        done = [*done, round_record(this_round)]
        ema.model.save_pretrained(str(out / f"round{k + 1}"))
        (out / f"round{k + 1}" / "round.json").write_text(json.dumps(
            {"rounds": done, "ema_step": ema.step, "trial": {"pattern_alone": pattern_alone,
                                                             "pattern_share": pattern_share,
                                                             "exclude_twins": exclude_twins,
                                                             "contrast": contrast, "more_clips": more_clips}}))
        unet.load_state_dict(ema.model.state_dict())
        curve.save()
        log(f"unet trial: round {k + 1} saved in {out / f'round{k + 1}'} ({time.time() - t0:.0f} s)")


@torch.no_grad()
def epsilon_errors(unet, text_encoder, tokenizer, x0: torch.Tensor, scenes: list, batch: int = 250) -> np.ndarray:
    """Each still's plain epsilon error (mean square over its latent) at a timestep and noise drawn from seed 0."""
    from diffusers import DDPMScheduler  # lazy: start-up time

    sched, gen, rng = DDPMScheduler(**SD_SCHEDULE), torch.Generator().manual_seed(0), np.random.default_rng(0)
    ids, out = tokenize(tokenizer, [caption(s, rng) for s in scenes]), []
    for i in range(0, len(x0), batch):
        xb = x0[i:i + batch]  # (b, 4, 16, 16)
        noise, t = torch.randn(xb.shape, generator=gen), torch.randint(0, 1000, (len(xb),), generator=gen)
        pred = unet(sched.add_noise(xb, noise, t), t, text_encoder(ids[i:i + batch]).last_hidden_state).sample
        out.append((pred - noise).pow(2).mean(dim=(1, 2, 3)))
    return torch.cat(out).numpy()


@torch.no_grad()
def encode(vae, images: np.ndarray, batch: int = 250) -> torch.Tensor:
    """uint8 (N, 64, 64, 3) -> the VAE's scaled latent means (N, 4, 16, 16)."""
    means = [vae.encode(to_pixels(images[i:i + batch])).latent_dist.mean for i in range(0, len(images), batch)]
    return torch.cat(means) * vae.config.scaling_factor


def heldout(work: Path, unets: list[Path], n: int = 2000) -> dict:
    """Per UNet: the mean epsilon error on n training stills and on n fresh ones, and fresh - training (paired by
    position in the two sets: the same noise and timestep) with its 95% bootstrap interval."""
    from diffusers import AutoencoderKL  # lazy: start-up time

    images, scenes, _, _ = pretraining(work, 0, PRETRAIN)  # memory-mapped, cached by the build
    train_images, train_scenes = images[:n], scenes[:n]
    fresh_images, fresh_scenes = render_set(work, replace(FRESH, n=n), 0)
    vae = AutoencoderKL.from_pretrained(str(work / "vae")).eval()
    tokenizer, text_encoder = U.load_text(work)
    x_train, x_fresh = encode(vae, train_images), encode(vae, fresh_images)
    result = {}
    for path in unets:
        unet = U.build(path).eval()
        a = epsilon_errors(unet, text_encoder, tokenizer, x_train, train_scenes)
        b = epsilon_errors(unet, text_encoder, tokenizer, x_fresh, fresh_scenes)
        mean, low, high = bootstrap_ci(list(b - a))
        result[str(path)] = {"training": round(float(a.mean()), 5), "fresh": round(float(b.mean()), 5),
                             "fresh - training": [round(v, 5) for v in (mean, low, high)]}
    return result


def model_with(unet: Path, out: Path) -> None:
    """The shipped model's folder with `unet` in place of its UNet (float16, as `export` writes it), written whole."""
    import shutil  # lazy: one command uses it

    from cdvideo.toyworld import model_dir  # lazy: start-up time

    with atomic_folder(out) as tmp:
        shutil.copytree(model_dir(), tmp, dirs_exist_ok=True, ignore=shutil.ignore_patterns("unet"))
        U.build(unet).to(torch.float16).save_pretrained(str(Path(tmp) / "unet"))
    log(f"unet trial: {out} is the shipped model with the UNet of {unet}")


def main() -> None:
    p = Parser(prog="python -m cdvideo.apps.worldbuild.unet_trial", description=__doc__.splitlines()[0])
    p.add_argument("--work", default="toyworld-build", help="the build folder (default: %(default)s)")
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="UNet rounds in a scratch folder")
    t.add_argument("--out", required=True, help="the scratch folder (round<k>/ in it)")
    t.add_argument("--rounds", type=Flag(int, Range(1, 100)), default=1)
    t.add_argument("--widths", type=int, nargs=4, default=None, help="block widths of a fresh UNet")
    t.add_argument("--heads", type=Flag(int, Range(1, 64)), default=None, help="attention heads of a fresh UNet")
    t.add_argument("--from", dest="saved", default=None, help="a saved round folder (with round.json) to go on after")
    t.add_argument("--lr", type=Flag(float, Range(1e-7, 1.0)), default=None, help="peak learning rate")
    t.add_argument("--floor", type=Flag(float, Range(0.0, 1.0)), default=None, help="the cosine's end, x lr")
    t.add_argument("--warmup", type=Flag(int, Range(0, 100_000)), default=None, help="warm-up steps")
    t.add_argument("--pattern-alone", type=Flag(float, Range(0.0, 1.0)), default=0.0,
                   help="of the captions that leave the body colour out, the share naming the pattern and its colour "
                   "('a tree with red dots'; the build: 0)")
    t.add_argument("--pattern-share", type=Flag(float, Range(0.0, 1.0)), default=None,
                   help="the share of a batch's stills that wear a pattern (the build: drawn uniformly, about 0.4)")
    t.add_argument("--exclude-twins", action="store_true",
                   help="leave out every still and clip of an instance's colour-swapped twin (the build keeps them)")
    t.add_argument("--contrast", type=Flag(float, Range(0.0, 1e6)), nargs=2, default=None, metavar=("W", "BETA"),
                   help="add W x the colour-swapped contrast captions' loss at BETA (the build: none)")
    t.add_argument("--more-clips", action="store_true",
                   help="clip frames from 6,400 more clips beside the pretraining's 1,600 (the build: those only)")
    h = sub.add_parser("heldout", help="epsilon error on training stills and on fresh ones")
    h.add_argument("unets", nargs="+", help="UNet folders")
    m = sub.add_parser("model", help="the shipped model with another UNet, a base for `tune --model`")
    m.add_argument("unet", help="a UNet folder (a trial's round<k>)")
    m.add_argument("out", help="the new model folder (must not exist)")
    args = p.parse_args()
    work = Path(args.work)
    if args.command == "model":
        if not (Path(args.unet) / "config.json").is_file():
            p.error(f"{args.unet}: not a UNet folder (no config.json); e.g. a trial's OUT/round7")
        if Path(args.out).exists():
            p.error(f"{args.out}: already exists; name a new folder")
        model_with(Path(args.unet), Path(args.out))
        return
    if args.command == "heldout":
        print(json.dumps(heldout(work, [Path(u) for u in args.unets]), indent=1))
        return
    if args.saved and not (Path(args.saved) / "round.json").is_file():
        p.error(f"--from {args.saved}: not a saved round (no round.json); e.g. toyworld-build/unet.round")
    twinless = record(Path(args.saved) if args.saved else None).get("trial", {}).get("exclude_twins", False)
    if args.saved and twinless != args.exclude_twins:
        p.error(f"--from {args.saved}: its rounds were trained {'without' if twinless else 'with'} the twins' stills; "
                f"go on {'with' if twinless else 'without'} --exclude-twins")
    plan = plans_for("cpu").unet
    optim = replace(plan.optim, **{k: v for k, v in (("lr", args.lr), ("floor", args.floor),
                                                                    ("warmup", args.warmup)) if v is not None})
    plan = replace(plan, optim=optim, **({"widths": tuple(args.widths)} if args.widths else {}))
    Path(args.out).mkdir(parents=True, exist_ok=True)
    train(work, Path(args.out), plan, args.rounds, Path(args.saved) if args.saved else None, args.heads,
          args.pattern_alone, args.pattern_share, args.exclude_twins,
          tuple(args.contrast) if args.contrast else None, args.more_clips)


if __name__ == "__main__":
    main()
