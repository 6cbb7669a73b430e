"""Does SPL keep a personalized concept compositional? Measured in the miniature world.

    python -m cdvideo.apps.worldbuild.spl_ablation                        # 4 instances x SPL {0, 0.1, 1, 10} x 3 seeds
    python -m cdvideo.apps.worldbuild.spl_ablation --instances striped_ball --seeds 0     # a quick look

Each run is `cdvideo train` with the demo's settings (configs/train/toyworld.yaml) on one instance's 5 photos; only
the SPL weight and the seed change (plus `spl.pooling=official` at weight 1, the public code's pooling). A fixed set
of compositional prompts is then rendered (images, and clips through the shipped motion adapter) and read by the
judge: identity (expected share of the instance's four traits shown), composition (share of the prompted
backgrounds, positions, motions and second objects shown), and the token's text-space drift (`cdvideo drift`'s
cosine distance from the class centroid). Also one joint two-concept run and one composed pair (constrained vs average).
Writes docs/toyworld/ablation.csv, ablation.md, ablation.json and ablation.png.
"""

from __future__ import annotations

import csv
import io
import json
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from cdvideo.data.ranges import SEED, Flag, Parser
from cdvideo.toyworld import judge as J
from cdvideo.toyworld.instances import INSTANCES, Instance
from cdvideo.toyworld.scoring import asked_in, composition

WEIGHTS = (0.0, 0.1, 1.0, 10.0)
DEFAULT_INSTANCES = ("striped_ball", "spotted_star", "dotted_heart", "striped_cup")  # 2 tuned on, 2 held out
IMAGE_PROMPTS = ("a {s} on the left on a blue background", "a {s} at the top on a grassy background",
                 "a {s} in the middle on a checkered background", "a {s} at the bottom, striped background")
PAIR_PROMPT = "a {s} next to a red star"
CLIP_PROMPTS = ("a {s} moving right on a blue background", "a {s} moving up on a grassy background")
SEEDS = (0, 1)  # render seeds per prompt


def windows(image: Image.Image) -> list[Image.Image]:
    """Left and right 40 px windows of a 64 px image, enlarged to 64 px: where two objects side by side sit."""
    return [image.crop((x, 12, x + 40, 52)).resize((64, 64), Image.Resampling.BICUBIC) for x in (0, 24)]


def pair_shown(judge, image: Image.Image, appearance: tuple, other: tuple[str, str]) -> tuple[bool, float]:
    """(one window shows the other object (class, colour) and the other window the subject's class, the best
    window's identity)."""
    reads = [J.read(judge, [w]) for w in windows(image)]
    labels = [(r.label("cls"), r.label("colour")) for r in reads]
    ids = [J.identity(r, appearance) for r in reads]
    shown = any(labels[i] == other and labels[1 - i][0] == appearance[0] for i in (0, 1))
    return shown, max(ids)


@torch.no_grad()
def score(weights_file: Path | None, subject: str, appearance: tuple, judge, adapter: str = "toyworld") -> dict:
    """Identity and composition over the fixed prompts (images, the pair prompt and clips)."""
    from cdvideo.pipelines.build import image_pipeline, video_pipeline  # lazy: start-up time
    from cdvideo.pipelines.registry import load_adapter, make_scheduler  # lazy: start-up time
    from cdvideo.pipelines.personalized import load_personalized  # lazy: start-up time

    m, _, _ = load_personalized("toyworld", [str(weights_file)] if weights_file else [])
    pipe = image_pipeline(m, scheduler=make_scheduler("ddim", m["scheduler"].config, False))
    texts = [p.format(s=subject) for p in IMAGE_PROMPTS]
    images = pipe([t for t in texts for _ in SEEDS], num_inference_steps=20, guidance_scale=5.0,
                  generator=torch.Generator().manual_seed(0)).images
    ident, comp = [], []
    for text, im in zip([t for t in texts for _ in SEEDS], images):
        reading = J.read(judge, [im])
        ident.append(J.identity(reading, appearance))
        comp.append(composition(J.honoured(J.attributes(reading, clip=False), asked_in(text))))
    pairs = pipe([PAIR_PROMPT.format(s=subject)] * len(SEEDS), num_inference_steps=20, guidance_scale=5.0,
                 generator=torch.Generator().manual_seed(1)).images
    pair = [pair_shown(judge, im, appearance, ("star", "red")) for im in pairs]
    vpipe = video_pipeline(m, load_adapter(adapter, torch.float32),
                           make_scheduler("ddim", m["scheduler"].config, animatediff=True))
    vpipe.set_progress_bar_config(disable=True)
    clip_comp, clip_id = [], []
    for k, p in enumerate(CLIP_PROMPTS):
        text = p.format(s=subject)
        frames = vpipe(text, num_frames=16, num_inference_steps=20, guidance_scale=5.0, output_type="pil",
                       generator=torch.Generator().manual_seed(k)).frames[0]
        reading = J.read(judge, frames)
        clip_id.append(J.identity(reading, appearance))
        clip_comp.append(composition(J.honoured(J.attributes(reading, clip=True), asked_in(text))))
    return {"identity": float(np.mean(ident + [i for _, i in pair] + clip_id)),
            "identity_images": float(np.mean(ident)), "identity_clips": float(np.mean(clip_id)),
            "composition": float(np.mean(comp + [float(s) for s, _ in pair] + clip_comp)),
            "composition_images": float(np.mean(comp)), "pair_shown": float(np.mean([s for s, _ in pair])),
            "composition_clips": float(np.mean(clip_comp))}


def drift_distance(weights_file: Path) -> float:
    from cdvideo.tasks.drift import compute, load_source  # lazy: start-up time
    from cdvideo.toyworld import drift_phrases  # lazy: start-up time

    return compute([load_source(weights_file)], drift_phrases())["runs"][0]["after"]["distance"]


def train_run(inst: Instance, out: Path, spl: float, seed: int, pooling: str = "eos") -> Path:
    from cdvideo.apps.demo import MASKLESS, TRAIN, train_config  # lazy: start-up time
    from cdvideo.apps.worldbuild.common import study_run  # lazy: start-up time

    return study_run(out, lambda: train_config(inst, out, TRAIN["max_steps"], spl, {
        "overwrite": True, **MASKLESS, "spl.pooling": pooling, "seed": seed}))


def multi_concept(work: Path, judge, adapter: str, seed: int = 0) -> list[dict]:
    """A joint run of two instances (sks ball + zwx star) and the composed pair of their separate runs."""
    from cdvideo.apps.demo import MASKLESS, TRAIN  # lazy: start-up time
    from cdvideo.data.config import load_train_config  # lazy: start-up time
    from cdvideo.tasks.train import train  # lazy: start-up time

    a, b = INSTANCES["striped_ball"], INSTANCES["spotted_star"]
    joint = work / "joint" / "weights.safetensors"
    if not joint.is_file():
        o = {"model": "toyworld", "output_dir": str(joint.parent), "overwrite": True, **TRAIN,
             "optimizer.learning_rate": MASKLESS["optimizer.learning_rate"], "seed": seed,
             "max_steps": 2 * TRAIN["max_steps"], "spl.weight": 1.0}
        concepts = {}
        for i, (inst, tok) in enumerate(((a, "sks"), (b, "zwx"))):
            concepts.update({f"concepts.{i}.images": f"toyworld:{inst.name}", f"concepts.{i}.class_word": inst.cls,
                             f"concepts.{i}.token": tok})
        train(load_train_config(None, values={**o, **concepts}))
    single_a = train_run(a, work / f"{a.name}-spl1.0-s{seed}", 1.0, seed)
    single_b = train_run(b, work / f"{b.name}-spl1.0-s{seed}", 1.0, seed)
    rows = []
    for label, file in [("joint", joint)] + [(f"composed {method}", _composed(work, single_a, single_b, method))
                                           for method in ("constrained", "average")]:
        for inst, tok in ((a, "sks"), (b, "zwx")):
            r = score(file, f"{tok} {inst.cls}", inst.appearance, judge, adapter)
            rows.append({"run": label, "instance": inst.name, **r})
    return rows


def _composed(work: Path, fa: Path, fb: Path, method: str) -> Path:
    from cdvideo.tasks.compose import compose_files  # lazy: start-up time

    out = work / f"composed-{method}.safetensors"
    if not out.is_file():
        compose_files([str(fa), str(fb)], str(out), method, ["2:sks=zwx"])  # 1-based: the star's file
    return out


def summarize(rows: list[dict]) -> list[dict]:
    """Mean and spread over seeds per (instance, setting), and over all instances per setting."""
    out = []
    keys = sorted({(r["instance"], r["setting"]) for r in rows}) + sorted({("all", r["setting"]) for r in rows})
    for inst, setting in keys:
        sel = [r for r in rows if r["setting"] == setting and inst in ("all", r["instance"])]
        agg = {"instance": inst, "setting": setting, "runs": len(sel)}
        for m in ("identity", "composition", "pair_shown", "drift"):
            v = np.array([r[m] for r in sel], dtype=float)
            agg[m], agg[f"{m}_std"] = float(v.mean()), float(v.std())
        out.append(agg)
    return out


def write_outputs(rows: list[dict], summary: list[dict], multi: list[dict], base: list[dict], docs: Path) -> None:
    import matplotlib  # lazy: start-up time

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # lazy: start-up time

    docs.mkdir(parents=True, exist_ok=True)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(rows[0]))
    w.writeheader()
    w.writerows(rows)
    (docs / "ablation.csv").write_text(buf.getvalue())
    fmt = lambda r, m: f"{r[m]:.3f} ± {r[m + '_std']:.3f}"  # noqa: E731
    lines = ["| instance | setting | runs | identity | composition | pair shown | drift |",
             "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['instance']} | {r['setting']} | {r['runs']} | {fmt(r, 'identity')} | {fmt(r, 'composition')} | "
              f"{fmt(r, 'pair_shown')} | {fmt(r, 'drift')} |" for r in summary]
    lines += ["", "| base model, class word | identity | composition | pair shown |", "|---|---|---|---|"]
    lines += [f"| {r['instance']} | {r['identity']:.3f} | {r['composition']:.3f} | {r['pair_shown']:.3f} |"
              for r in base]
    lines += ["", "| multi-concept run | instance | identity | composition | pair shown |", "|---|---|---|---|---|"]
    lines += [f"| {r['run']} | {r['instance']} | {r['identity']:.3f} | {r['composition']:.3f} | "
              f"{r['pair_shown']:.3f} |" for r in multi]
    (docs / "ablation.md").write_text("\n".join(lines) + "\n")
    (docs / "ablation.json").write_text(json.dumps({"runs": rows, "summary": summary, "multi": multi, "base": base},
                                                   indent=1) + "\n")
    fig, ax = plt.subplots(figsize=(7, 5.5), dpi=110)
    settings = sorted({r["setting"] for r in rows})
    colours = plt.get_cmap("viridis")(np.linspace(0, 0.9, len(settings)))
    markers = dict(zip(sorted({r["instance"] for r in rows}), "os^vD<>p"))
    for s, c in zip(settings, colours):
        for r in (r for r in rows if r["setting"] == s):
            ax.scatter(r["composition"], r["identity"], color=c, marker=markers[r["instance"]], s=45,
                       edgecolors="black", linewidths=0.4)
        ax.scatter([], [], color=c, label=s)
    for inst, mk in markers.items():
        ax.scatter([], [], color="white", edgecolors="black", marker=mk, label=inst)
    ax.set_xlabel("composition (prompted background, position, motion, second object shown)")
    ax.set_ylabel("identity (judge: share of the instance's traits shown)")
    ax.set_title("SPL ablation in the miniature world (one point per run)")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(docs / "ablation.png")
    plt.close(fig)


def main() -> None:
    p = Parser(description=__doc__.splitlines()[0])
    p.add_argument("--instances", nargs="+", default=list(DEFAULT_INSTANCES))
    p.add_argument("--seeds", type=Flag(int, SEED), nargs="+", default=[0, 1, 2])
    p.add_argument("--work", default=".toyworld-build/ablation", help="the runs' weights (default: %(default)s)")
    p.add_argument("--docs", default="docs/toyworld", help="tables and figures (default: %(default)s)")
    p.add_argument("--no-multi", action="store_true", help="skip the joint and composed runs")
    p.add_argument("--adapter", default="toyworld", help="the motion adapter the clips render through (a folder: "
                   "e.g. one rebuilt with --motion-rounds)")
    args = p.parse_args()
    work, judge, t0 = Path(args.work), J.load(), time.time()
    settings = [(f"spl {w:g}", w, "eos") for w in WEIGHTS] + [("spl 1 official", 1.0, "official")]
    rows, base = [], []
    for name in args.instances:
        inst = INSTANCES[name]
        base.append({"instance": name, **score(None, inst.cls, inst.appearance, judge, args.adapter)})
        for label, weight, pooling in settings:
            for seed in args.seeds:
                tag = f"{name}-spl{weight}{'-official' if pooling == 'official' else ''}-s{seed}"
                path = train_run(inst, work / tag, weight, seed, pooling)
                r = {"instance": name, "held_out": inst.held_out, "setting": label, "seed": seed,
                     **score(path, f"sks {inst.cls}", inst.appearance, judge, args.adapter),
                     "drift": drift_distance(path)}
                rows.append(r)
                print(f"[{time.time() - t0:6.0f} s] {tag}: identity {r['identity']:.3f} composition "
                      f"{r['composition']:.3f} drift {r['drift']:.3f}", flush=True)
    multi = [] if args.no_multi else multi_concept(work, judge, args.adapter)
    write_outputs(rows, summarize(rows), multi, base, Path(args.docs))
    print(f"wrote {args.docs}/ablation.* in {(time.time() - t0) / 60:.1f} min")


if __name__ == "__main__":
    main()
