"""Do the motion words reach the UNet's features, where the motion modules read the prompt, and do the clips
follow them?

    python -m cdvideo.apps.worldbuild.motion_signal              # every test, about 2 minutes on 2 CPU cores
    python -m cdvideo.apps.worldbuild.motion_signal --adapter toyworld-build/motion_adapter   # another adapter's
    python -m cdvideo.apps.worldbuild.motion_signal --test symmetry                 # seconds: the symmetry in time
    python -m cdvideo.apps.worldbuild.motion_signal --test direction --out d.json   # 1.5 minutes: the direction test
    python -m cdvideo.apps.worldbuild.motion_signal --test sweeps     # 11 s: how the judge reads each sweep
    python -m cdvideo.apps.worldbuild.motion_signal --compare new.json old.json   # two direction tests, paired

One noisy latent, prompts that differ only in their motion words, and prompts that differ only in their colour
word, through the shipped UNet. It prints how far each block's output spreads across the prompts of each group:
the RMS distance from the group mean, over the norm of the mean; then the same for pairs of opposite motions
against a pair of colours. Then the caption test: fresh rendered clips, noised, denoised by the UNet with the
shipped motion adapter under their own motion word, the opposite one, and none; if the model used the words, its
own word would give the lowest loss. Then how far the UNet with the adapter is from symmetric in time. Last, the
direction test: the report's 24 clip prompts rendered under their own motion word and under the opposite one on
the same seed; a model that draws the word's direction moves the two clips of a pair opposite ways along the
motion's axis. The sweeps test reads rendered translations across the frame and short ones from about the centre
(and size changes from the middle extent: world.SWEEPS) with the judge. docs/toyworld.md quotes the numbers.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from cdvideo.apps.worldbuild.common import MOTION_SCHEDULE, log, to_pixels
from cdvideo.apps.worldbuild.judge_motion import KINDS, sweep_readings
from cdvideo.data.files import write_text_atomic
from cdvideo.math.metrics import bootstrap_ci
from cdvideo.models.loading import load_components
from cdvideo.models.text import encode_prompts
from cdvideo.pipelines.build import video_pipeline
from cdvideo.pipelines.registry import load_adapter, make_scheduler
from cdvideo.toyworld import MODEL_ID, draw, motions, scoring, world
from cdvideo.toyworld import judge as J

MOTIONS = ["moving left", "moving right", "moving up", "moving down", "growing", "shrinking"]
COLOURS = ["red", "blue", "yellow", "white", "pink", "black"]
PAIRS = {"left/right": ("moving left", "moving right"), "up/down": ("moving up", "moving down"),
         "growing/shrinking": ("growing", "shrinking"), "red/blue (colours)": ("red ball", "blue ball")}


def spread(f: torch.Tensor) -> float:
    """RMS distance of the rows from their mean, relative to the mean's norm."""
    mean = f.mean(0, keepdim=True)
    return ((f - mean).norm() / mean.norm() / len(f) ** 0.5).item()


@torch.no_grad()
def block_outputs(m: dict, prompts: list[str], x: torch.Tensor, t: int) -> dict[str, torch.Tensor]:
    """Outputs of the two cross-attention down blocks and the mid block for each prompt."""
    unet, out = m["unet"].eval(), {}
    hooks = [blk.register_forward_hook(lambda mod, inp, o, n=f"down{i}": out.__setitem__(n, o[0]))
             for i, blk in enumerate(unet.down_blocks) if getattr(blk, "has_cross_attention", False)]
    hooks.append(unet.mid_block.register_forward_hook(lambda mod, inp, o: out.__setitem__("mid", o)))
    cond = encode_prompts(m["text_encoder"], m["tokenizer"], prompts)  # (P, 77, D)
    unet(x.expand(len(prompts), -1, -1, -1), torch.tensor(t), cond)
    for h in hooks:
        h.remove()
    return out


OPPOSITE = {m: b for m, b in world.BACKWARDS.items() if m != b}  # the motions with an opposite word


@torch.no_grad()
def caption_test(m: dict, adapter, per_motion: int = 4, seed: int = 777) -> None:
    """Denoising loss of fresh clips under their own motion word, the opposite one, and none, by timestep."""
    from diffusers import DDPMScheduler, UNetMotionModel  # lazy: start-up time

    model = UNetMotionModel.from_unet2d(m["unet"], adapter).eval()
    sched, vae, rng = DDPMScheduler(**MOTION_SCHEDULE), m["vae"], np.random.default_rng(seed)
    scenes = [world.with_motion(world.sample_scene(rng), rng, mo) for mo in OPPOSITE for _ in range(per_motion)]
    clips = []  # per scene: its latents (1, 4, F, 16, 16), its noise, and the prompt states of each caption
    for k, sc in enumerate(scenes):
        x0 = vae.encode(to_pixels(draw.render(sc))).latent_dist.mean * vae.config.scaling_factor  # (F, 4, 16, 16)
        x0 = x0.permute(1, 0, 2, 3)[None]  # (1, 4, F, 16, 16)
        subject = world.subject_phrase(sc.cls, sc.colour)
        conds = {name: encode_prompts(m["text_encoder"], m["tokenizer"], [world.prompt(subject, None, sc.background,
                                                                                        mo)])  # (1, 77, D)
                 for name, mo in (("own", sc.motion), ("opposite", OPPOSITE[sc.motion]), ("none", None))}
        clips.append((x0, torch.randn(x0.shape, generator=torch.Generator().manual_seed(seed + k)), conds))
    for t in (100, 300, 500, 700, 900):
        losses = {"own": [], "opposite": [], "none": []}
        for x0, noise, conds in clips:
            noisy = sched.add_noise(x0, noise, torch.tensor([t]))
            for name, cond in conds.items():
                pred = model(noisy, torch.tensor(t), cond.repeat_interleave(x0.shape[2], 0)).sample
                losses[name].append((pred - noise).pow(2).mean().item())
        own, opp = np.array(losses["own"]), np.array(losses["opposite"])
        print(f"caption test t={t}: loss own {own.mean():.4f}  opposite {opp.mean():.4f}  "
              f"none {np.mean(losses['none']):.4f}  own < opposite in {np.mean(own < opp):.0%} of "
              f"{len(own)} clips")


@torch.no_grad()
def direction_test(m: dict, adapter, n: int = 24, negative: str = "none", guidance: float = 5.0) -> dict:
    """The report's n clip prompts under their own motion word and the opposite one, on the same seed: per word,
    the share the judge reads as asked, or as either motion of its axis (left or right, up or down, growing or
    shrinking), and the share moving the asked way along it; per pair, the share in which the two words move the
    clip opposite ways (a model that ignores the word's direction: near 0). `negative`: the negative prompt, none,
    the opposite motion's words ("word": "moving down" for "moving up"), or the whole prompt asking it
    ("prompt"): classifier-free guidance (scale `guidance`) away from the opposite motion."""
    pipe = video_pipeline(m, adapter, make_scheduler("ddim", m["scheduler"].config, animatediff=True))
    pipe.set_progress_bar_config(disable=True)
    judge, rows = J.load(), []
    for p in scoring.clip_prompts(n):
        row = {"prompt": p.text, "seed": p.seed}
        for name, motion in (("own", p.asked["motion"]), ("opposite", OPPOSITE[p.asked["motion"]])):
            against = {"none": None, "word": world.MOTION_WORDS[OPPOSITE[motion]],
                       "prompt": scoring.asking(p, OPPOSITE[motion])}[negative]
            frames = pipe(scoring.asking(p, motion), negative_prompt=against, num_frames=16, num_inference_steps=25,
                          guidance_scale=guidance, generator=torch.Generator().manual_seed(p.seed),
                          output_type="pil").frames[0]
            row[name] = motions.direction(J.read(judge, frames), motion)
        row["apart"] = row["own"]["progress"] > 0 and row["opposite"]["progress"] > 0
        rows.append(row)
        log(f"{p.seed:2d} " + " | ".join(f"{c['motion']:9s} read {c['read']:9s} progress {c['progress']:+6.2f}"
                                         for c in (row["own"], row["opposite"])))
    clips = [r[k] for r in rows for k in ("own", "opposite")]
    by_word = {mo: motions.direction_shares([c for c in clips if c["motion"] == mo]) for mo in motions.AXIS}
    axis = {mo: a for mo, (a, _) in motions.AXIS.items()}  # still and spinning: on no axis
    shares = motions.direction_shares(clips)
    out = {"clips": len(clips), "read_as_asked": shares["read_as_asked"],
           "read_on_the_asked_axis": float(np.mean([axis.get(c["read"]) == axis[c["motion"]] for c in clips])),
           "moves_the_asked_way": shares["moves_the_asked_way"],
           "pairs_apart": float(np.mean([r["apart"] for r in rows])), "by_word": by_word, "rows": rows}
    moving = [c for c in clips if c["motion"] in world.TRANSLATIONS]  # each world clip sweeps the frame
    leaves = np.array([motions.away_from_start(dict(c, progress=1.0)) for c in moving])  # starts where the word leaves
    asked = np.array([c["progress"] > 0 for c in moving])
    out |= {"translations_away_from_start": float(np.mean([motions.away_from_start(c) for c in moving])),
            "asked_way_when_starting_where_it_leaves_from": float(asked[leaves].mean()),
            "asked_way_otherwise": float(asked[~leaves].mean())}
    log(f"translations: {out['translations_away_from_start']:.2f} of {len(moving)} move away from the half they "
        f"start in; the asked way {out['asked_way_when_starting_where_it_leaves_from']:.2f} of {leaves.sum()} that "
        f"start where it leaves from, {out['asked_way_otherwise']:.2f} of the others")
    log(f"direction test: {len(clips)} clips, read as asked {out['read_as_asked']:.2f}, on the asked axis "
        f"{out['read_on_the_asked_axis']:.2f}, moving the asked way "
        f"{out['moves_the_asked_way']:.2f}; the two words of a pair move it opposite ways in "
        f"{out['pairs_apart']:.2f} of {len(rows)} pairs")
    for mo, v in by_word.items():
        log(f"  {mo:9s} read as asked {v['read_as_asked']:.2f}, moving the asked way {v['moves_the_asked_way']:.2f}")
    out["by_kind"] = by_kind(rows)
    for kind, v in out["by_kind"].items():
        log(f"{kind}: {v['asked_way']} of {v['clips']} move the asked way, {v['read_as_asked']} read as asked; "
            f"{v['pairs_apart']} of {v['pairs']} pairs apart")
    return out


def by_kind(rows: list[dict]) -> dict:
    """The direction test's translations and size changes apart: clips moving the asked way and read as asked,
    pairs whose two words move them apart."""
    out = {}
    for kind, moves in KINDS.items():
        pairs = [r for r in rows if r["own"]["motion"] in moves]
        clips = [r[k] for r in pairs for k in ("own", "opposite")]
        out[kind] = {"clips": len(clips), "asked_way": sum(c["progress"] > 0 for c in clips),
                     "read_as_asked": sum(c["read"] == c["motion"] for c in clips), "pairs": len(pairs),
                     "pairs_apart": sum(r["apart"] for r in pairs)}
    return out


def compare(new: Path, old: Path) -> None:
    """Two direction tests' files (--out) on the same prompts: per kind, the share of clips moving the asked way,
    new minus old, paired on the clip, with its 95% interval."""
    a, b = (json.loads(f.read_text())["rows"] for f in (new, old))
    if [(r["prompt"], r["seed"]) for r in a] != [(r["prompt"], r["seed"]) for r in b]:
        raise SystemExit(f"--compare: {new} and {old} hold other prompts; run both with the same --prompts")
    for kind, moves in KINDS.items():
        diff = [float(x[k]["progress"] > 0) - float(y[k]["progress"] > 0)
                for x, y in zip(a, b) if x["own"]["motion"] in moves for k in ("own", "opposite")]
        mean, low, high = bootstrap_ci(diff)
        log(f"{kind}: moving the asked way {mean:+.2f} [{low:+.2f}, {high:+.2f}], {new.name} against {old.name} "
            f"({len(diff)} clips paired)")


def sweeps_test() -> dict:
    """The shipped judge on rendered clips of each translation and size change along each of world.SWEEPS: the share
    it reads as their motion, and the share whose regressed track moves their way."""
    out = sweep_readings(J.load())
    for name, shares in out.items():
        log(f"sweeps test, {name}: read as their motion {shares['read_as_asked']:.2f}, "
            f"their track moving their way {shares['moves_the_asked_way']:.2f}")
    return out


@torch.no_grad()
def symmetry_test(m: dict, adapter, seed: int = 0) -> dict:
    """How far the UNet with the adapter is from symmetric in time: |f(x) - R f(R x)| / |f(x)| for 16 noisy frames
    x and R the frames reversed, by timestep; and how far the output moves at t = 500 with the motion modules'
    positional embeddings zeroed (their only view of the frame order)."""
    from diffusers import UNetMotionModel  # lazy: start-up time

    model = UNetMotionModel.from_unet2d(m["unet"], adapter).eval()
    cond = encode_prompts(m["text_encoder"], m["tokenizer"], ["a red box moving up on a blue background"])
    cond = cond.repeat_interleave(16, 0)  # (F, 77, D)
    x = torch.randn(1, 4, 16, 16, 16, generator=torch.Generator().manual_seed(seed))  # (1, 4, F, 16, 16)
    out = {}
    for t in (900, 500, 100):
        a = model(x, torch.tensor(t), cond).sample
        b = model(x.flip(2), torch.tensor(t), cond).sample.flip(2)
        out[f"asymmetry_t{t}"] = ((a - b).norm() / a.norm()).item()
    a = model(x, torch.tensor(500), cond).sample
    for module in model.modules():
        if type(module).__name__ == "SinusoidalPositionalEmbedding":
            module.pe.zero_()
    out["positional_embedding_t500"] = ((a - model(x, torch.tensor(500), cond).sample).norm() / a.norm()).item()
    print("symmetry test: " + ", ".join(f"{k} {v:.3f}" for k, v in out.items()))
    return out


def features_test(m: dict) -> None:
    """How far the blocks' outputs spread across motion words against colour words, at two timesteps."""
    x = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(0))  # (1, 4, 16, 16)
    groups = {"motion words": [f"a red ball {w} on a green background" for w in MOTIONS],
              "colour words": [f"a {c} ball on a green background" for c in COLOURS]}
    for t in (200, 600):
        outs = {name: block_outputs(m, prompts, x, t) for name, prompts in groups.items()}
        for block in outs["motion words"]:
            print(f"t={t} {block:6s} " + "  ".join(f"spread across {name} {spread(o[block]):.3f}"
                                                   for name, o in outs.items()))
    for t in (200, 600):
        for name, (a, b) in PAIRS.items():
            pair = [f"a {w} on a green background" if "ball" in w else f"a red ball {w} on a green background"
                    for w in (a, b)]
            o = block_outputs(m, pair, x, t)
            print(f"t={t} {name:18s} " + "  ".join(f"{block} {spread(f):.3f}" for block, f in o.items()))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--adapter", default=MODEL_ID, help="the motion adapter tested (default: the shipped one)")
    p.add_argument("--test", choices=("all", "features", "caption", "symmetry", "direction", "sweeps"),
                   default="all")
    p.add_argument("--out", type=Path, help="also write the direction test's numbers here (JSON)")
    p.add_argument("--negative", choices=("none", "word", "prompt"), default="none",
                   help="direction test: the negative prompt, none, the opposite motion's words, or the prompt "
                   "asking the opposite motion (default: none)")
    p.add_argument("--guidance", type=float, default=5.0, help="direction test: guidance scale (default: 5)")
    p.add_argument("--prompts", type=int, default=24, help="direction test: how many of the report's clip prompts "
                   "(default: 24; a third of them size changes)")
    p.add_argument("--compare", nargs=2, type=Path, metavar=("NEW", "OLD"),
                   help="no model: two direction tests' --out files compared, paired on the clip")
    args = p.parse_args()
    if args.compare:
        compare(*args.compare)
        return
    if args.test in ("all", "sweeps"):  # the judge alone: rendered clips, no model
        sweeps_test()
    if args.test == "sweeps":
        return
    m = load_components(MODEL_ID)
    adapter = load_adapter(args.adapter, torch.float32)
    if args.test in ("all", "features"):
        features_test(m)
    if args.test in ("all", "caption"):
        caption_test(m, adapter)
    if args.test in ("all", "symmetry"):
        symmetry_test(m, adapter)
    if args.test in ("all", "direction"):
        result = direction_test(m, adapter, args.prompts, negative=args.negative, guidance=args.guidance)
        if args.out:
            write_text_atomic(args.out, json.dumps({"adapter": str(args.adapter), "negative": args.negative,
                                                    "guidance": args.guidance, **result}, indent=1) + "\n")


if __name__ == "__main__":
    main()
