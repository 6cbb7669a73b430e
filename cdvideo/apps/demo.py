"""`cdvideo demo`: what cdvideo does, in about three minutes on a laptop CPU, offline.

In the miniature world (`model: toyworld`) it personalizes one personal instance from its 5 photos with
ClassDiffusion, renders compositional prompts as clips (MP4 and GIF enlarged for viewing, raw PNG frames kept),
plots the token's semantic drift, and has the world's judge report identity and the prompted attributes before
personalization (the base model prompted with the class word), after it, and, when the time allows, after the
same run without SPL. Every stage goes through the same functions as `cdvideo train`, `animate` and `drift`.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from cdvideo.apps.demo_options import STILL_SEEDS, TRAIN, DemoOptions  # the settings, apart for the parser
from cdvideo.data.config import load_train_config
from cdvideo.data.files import write_text_atomic
from cdvideo.errors import CdvideoError
from cdvideo.math.metrics import bootstrap_ci, strip_tokens
from cdvideo.pipelines.build import image_pipeline, video_pipeline
from cdvideo.pipelines.personalized import load_personalized
from cdvideo.pipelines.registry import load_adapter, make_scheduler
from cdvideo.tasks.conditioning import FREE_INIT
from cdvideo.tasks.drift import drift
from cdvideo.tasks.render import Job, Options, animate
from cdvideo.tasks.train import train
from cdvideo.toyworld import MODEL_ID, world
from cdvideo.toyworld import judge as J
from cdvideo.toyworld.instances import Instance, get
from cdvideo.toyworld.scoring import Sample, asked_in, composition, eval_set, score_samples, shown

TOKEN = "sks"
PROMPTS = ("a {token} {class_word} moving right on a {background} background",
           "a {token} {class_word} wearing a red hat on a {background} background",
           "a {token} {class_word} moving up on a {background} background")
PROMPT_BACKGROUNDS = ("blue", "grassy", "checkered")  # each prompt's, unless it hides the subject's outline
BUDGET_S = 180  # the run without SPL is skipped (mode 'auto') when it would end later than this
RECIPE_ROW = f"ClassDiffusion (SPL {TRAIN['spl.weight']:g})"  # the report's row of the recipe's run
# The recipe before subject masks (to commit 2484fef): the studies of record ran it (docs/toyworld.md) and keep it,
# so that their cached runs and committed rows stay one recipe's
MASKLESS = {"optimizer.learning_rate": 1e-3, "concepts.0.masks": None}
RENDER = {"num_inference_steps": 20, "guidance_scale": 5.0}


@torch.no_grad()
def render_samples(weights: Path | None, samples: list[Sample], adapter: str = MODEL_ID,
                   free_init: bool = False, model: str = MODEL_ID) -> list[list]:
    """Each sample's frames through the miniature model (or another base `model` of its architecture) with
    `weights` applied: stills in batches, each with its own seed (the same for every model, so differences between
    models are paired), clips through the motion adapter (with FreeInit when asked, as `cdvideo animate
    --free-init`)."""
    m, _, _ = load_personalized(model, [str(weights)] if weights else [])
    frames: dict[int, list] = {}
    stills = [i for i, s in enumerate(samples) if s.kind != "motion"]
    if stills:
        pipe = image_pipeline(m, scheduler=make_scheduler("ddim", m["scheduler"].config, False))
        pipe.set_progress_bar_config(disable=True)
        for k in range(0, len(stills), 64):
            batch = [samples[i] for i in stills[k:k + 64]]
            images = pipe([s.text for s in batch], generator=[torch.Generator().manual_seed(s.seed) for s in batch],
                          **RENDER).images
            frames.update({i: [im] for i, im in zip(stills[k:k + 64], images)})
    clips = [i for i, s in enumerate(samples) if s.kind == "motion"]
    if clips:
        vpipe = video_pipeline(m, load_adapter(adapter, torch.float32),
                               make_scheduler("ddim", m["scheduler"].config, animatediff=True))
        vpipe.set_progress_bar_config(disable=True)
        if free_init:
            vpipe.enable_free_init(**FREE_INIT)
        for i in clips:
            frames[i] = vpipe(samples[i].text, num_frames=16, output_type="pil",
                              generator=torch.Generator().manual_seed(samples[i].seed), **RENDER).frames[0]
    return [frames[i] for i in range(len(samples))]


def still_scores(judge, inst: Instance, weights: Path | None, subject: str, seeds: int = STILL_SEEDS) -> dict:
    """Identity and composition on 26 stills per seed (8 backgrounds, 5 positions, 7 colour changes, 3 accessories,
    3 second objects) with 95% bootstrap intervals over the samples."""
    samples = eval_set(inst.colour, subject, seeds, 0)
    per = score_samples(judge, inst.appearance, samples, render_samples(weights, samples))["samples"]
    out = {}
    for key, name in (("identity", "stills identity"), ("hit", "stills composition")):
        mean, lo, hi = bootstrap_ci([p[key] for p in per])
        out[name], out[f"{name} ci"] = mean, [lo, hi]
    return out


def default_prompts(inst: Instance, backgrounds: tuple[str, ...] = PROMPT_BACKGROUNDS) -> list[str]:
    """The demo's prompts for `inst` ({token} and {class_word} left in): each on its background, or, where that
    would hide the instance's outline (`world.edge_colours`: a green tree or a green rim on grass), on the first of
    the world's backgrounds that hides none of it and no other prompt takes."""
    edges = world.edge_colours(inst.colour, inst.pattern, inst.pattern_colour)
    chosen: list[str] = []
    for wanted in backgrounds:
        chosen.append(next(b for b in (wanted, *world.BACKGROUNDS)
                           if b not in chosen and not any(world.clashes(c, b) for c in edges)))
    return [p.replace("{background}", b) for p, b in zip(PROMPTS, chosen)]


def train_config(inst: Instance, output_dir: Path, steps: int, spl_weight: float, extra: dict | None = None):
    """The ClassDiffusion run of the demo, as `cdvideo train` would read it from configs/train/toyworld.yaml, with
    `extra` typed values by dotted key on top (the ablations' learning rate, seed, pooling...)."""
    values = {"model": MODEL_ID, "output_dir": str(output_dir), "concepts.0.images": f"toyworld:{inst.name}",
              "concepts.0.masks": f"toyworld:{inst.name}", "concepts.0.class_word": inst.cls,
              "concepts.0.token": TOKEN, **TRAIN, "max_steps": steps, "spl.weight": spl_weight, **(extra or {})}
    return load_train_config(None, values=values)


def new_folder(root: Path, name: str) -> Path:
    """root/name, or root/name-2, -3...: created here, so two demos never share a folder."""
    root.mkdir(parents=True, exist_ok=True)
    for n in range(1, 10_000):
        folder = root / (name if n == 1 else f"{name}-{n}")
        try:
            folder.mkdir()
            return folder
        except FileExistsError:
            continue
    raise CdvideoError(f"{root}: no free folder name for {name}")


def render_and_score(judge, inst: Instance, weights: Path | None, prompts: list[str], seeds: list[int],
                     folder: Path) -> tuple[dict, list[Path]]:
    """Clips of `prompts` (MP4 + GIF enlarged 4x, PNG frames) into `folder`; the judge's identity (with a 95%
    bootstrap interval over the clips) and the share of clips showing each prompted attribute."""

    opts = Options(weights=[str(weights)] if weights else [], model=MODEL_ID, output_dir=str(folder),
                   formats=["mp4", "gif", "png"], upscale=4)
    written = animate(opts, [Job(prompt=p, seed=list(seeds), **RENDER) for p in prompts])
    ident, hits = [], {}
    for sidecar in (p for p in written if p.suffix == ".json"):
        record = json.loads(sidecar.read_text())
        frames = [Image.open(f).convert("RGB") for f in sorted((folder / f"{sidecar.stem}_frames").glob("*.png"))]
        reading = J.read(judge, frames)
        ident.append(J.identity(reading, inst.appearance))
        found = J.honoured(J.attributes(reading, clip=True), asked_in(record["prompt"]))
        for k, ok in shown(found).items():
            hits.setdefault(k, []).append(ok)
        hits.setdefault("composition", []).append(composition(found))
    mean, lo, hi = bootstrap_ci(ident)
    scores = {"identity": mean, "identity ci": [lo, hi], **{k: float(np.nanmean(v)) for k, v in hits.items()}}
    return scores, written


def stage(k: int, total: int, text: str) -> None:
    tqdm.write(f"[{k}/{total}] {text}")


def run(opts: DemoOptions) -> tuple[dict, list[Path]]:
    """The whole demo; returns the report and every file written."""

    t0 = time.time()
    inst = get(opts.instance)
    if opts.without_spl not in ("auto", "always", "never"):
        raise CdvideoError(f"--without-spl {opts.without_spl}: choose auto, always or never")
    if opts.steps < 1:
        raise CdvideoError(f"--steps {opts.steps}: must be at least 1")
    prompts = [p.format(token=TOKEN, class_word=inst.cls) for p in opts.prompts or default_prompts(inst)]
    missing = [p for p in prompts if f"{TOKEN} {inst.cls}" not in p]
    if missing:
        raise CdvideoError(f"--prompt {missing[0]!r}: write '{TOKEN} {inst.cls}' (or {{token}} {{class_word}}) "
                           "where the personal subject goes")
    out = new_folder(Path(opts.output_dir), inst.name)
    judge, written, rows = J.load(), [], {}
    total = 5 if opts.without_spl != "never" else 4

    stage(1, total, f"base model, prompted with the class word '{inst.cls}'")
    rows["base model, class word"], files = render_and_score(
        judge, inst, None, [strip_tokens(p, [TOKEN]) for p in prompts], opts.seeds, out / "before")
    rows["base model, class word"] |= still_scores(judge, inst, None, inst.cls, opts.still_seeds)
    written += files

    stage(2, total, f"ClassDiffusion on the 5 photos of {inst.name} ({inst.describe()}), {opts.steps} steps")
    t_run = time.time()
    w_spl = train(train_config(inst, out / "run", opts.steps, TRAIN["spl.weight"]))
    rows[RECIPE_ROW], files = render_and_score(judge, inst, w_spl, prompts, opts.seeds, out / "clips")
    rows[RECIPE_ROW] |= still_scores(judge, inst, w_spl, f"{TOKEN} {inst.cls}", opts.still_seeds)
    written += [out / "run" / "config.yaml", w_spl, *files]
    run_s = time.time() - t_run

    runs = [w_spl]
    if opts.without_spl == "always" or (opts.without_spl == "auto" and time.time() - t0 + run_s < BUDGET_S):
        stage(3, total, "the same run without SPL (spl.weight=0), for comparison")
        w_plain = train(train_config(inst, out / "run-no-spl", opts.steps, 0.0))
        rows["no SPL"], files = render_and_score(judge, inst, w_plain, prompts, opts.seeds, out / "clips-no-spl")
        rows["no SPL"] |= still_scores(judge, inst, w_plain, f"{TOKEN} {inst.cls}", opts.still_seeds)
        written += [out / "run-no-spl" / "config.yaml", w_plain, *files]
        runs.append(w_plain)
    elif opts.without_spl == "auto":
        stage(3, total, f"skipping the run without SPL: it would end after {BUDGET_S} s (--without-spl always)")

    stage(total - 1, total, "semantic drift of the token")
    written += drift([str(r) for r in runs], str(out / "drift"))

    stage(total, total, "report")
    report = {"instance": inst.name, "looks": inst.describe(), "class_word": inst.cls, "token": TOKEN,
              "steps": opts.steps, "prompts": prompts, "seeds": opts.seeds,
              "stills": len(eval_set(inst.colour, inst.cls, opts.still_seeds, 0)), "rows": rows,
              "seconds": round(time.time() - t0, 1)}
    written += write_report(out, report)
    return report, written


def table(report: dict) -> str:
    """The report's scores as a markdown table (identity and the stills': mean and 95% interval over the samples)."""
    cols = [c for c in ("identity", "background", "position", "motion", "accessory", "second object", "composition",
                        "stills identity", "stills composition") if any(c in r for r in report["rows"].values())]
    lines = ["| | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]

    def cell(r: dict, c: str) -> str:
        if c not in r:
            return "-"
        return f"{r[c]:.2f} [{r[c + ' ci'][0]:.2f}, {r[c + ' ci'][1]:.2f}]" if f"{c} ci" in r else f"{r[c]:.2f}"
    for name, r in report["rows"].items():
        lines.append(f"| {name} | " + " | ".join(cell(r, c) for c in cols) + " |")
    return "\n".join(lines)


def write_report(out: Path, report: dict) -> list[Path]:
    text = (f"# cdvideo demo: {report['instance']} ({report['looks']})\n\n"
            f"Prompts ({report['token']} = the personal {report['class_word']}; before: the class word alone):\n\n"
            + "".join(f"- {p}\n" for p in report["prompts"])
            + "\nRead by the miniature world's judge: identity = expected share of the instance's traits "
              "(class, colour, pattern, pattern colour) a clip shows, with a 95% interval over the clips; "
              "background, position, motion, accessory, second object = share of clips showing the prompted one "
              "(an accessory or object with its colour); "
              f"composition = their mean. Stills: {report['stills']} images of background, position, colour, accessory "
              "and second-object prompts, with 95% intervals.\n\n" + table(report)
            + f"\n\n{report['seconds']:.0f} s in all.\n")
    write_text_atomic(out / "report.md", text)
    write_text_atomic(out / "report.json", json.dumps(report, indent=1) + "\n")
    return [out / "report.md", out / "report.json"]
