"""How the miniature world's training recipe (configs/train/toyworld.yaml, `cdvideo demo`) is chosen: a small grid
of settings (learning rates of the K/V and of the token, steps, SPL weight and pooling), each trained on the four
tuning instances only (the two held-out ones never enter it) with two training seeds and scored on the claim
study's stills (background, position, property, accessory, second object; 26 per render seed) and its 4 motion
clips, as the share of the way from the base model (told the class word) to the spelled-out ceiling (told the
traits) that its identity recovers, on stills and on clips apart; each cell against cell 0 (the recipe at SPL 1) or
the cell `--against` names (32: the recipe at SPL 0.1), paired on (instance, seed), with 95% intervals.

    python -m cdvideo.apps.worldbuild.tune    # about 45 minutes on 2 cores; writes docs/toyworld/tuning.md
    python -m cdvideo.apps.worldbuild.tune --cells 1 2 3 --seeds 0 1 2 3 4 5 --out tuning_masks.md
    python -m cdvideo.apps.worldbuild.tune --cells 36 --against 32 --seeds 0 1 2 3 4 5 --out tuning_flip.md
    python -m cdvideo.apps.worldbuild.tune --cells 40 41 42 --against 32 --seeds 0 1 --out tuning_min_snr.md
    python -m cdvideo.apps.worldbuild.tune --cells 43 44 --against 32 --seeds 0 1 --out tuning_high_noise_steps.md
    python -m cdvideo.apps.worldbuild.tune --model M --cells 0 --instances ... --out tuning_M.md   # another base

`--model` takes another base of the miniature model's architecture (a diffusers folder, e.g. the shipped model with
a trial's UNet): every run is trained and rendered on it, its base and ceiling read on it (clips through the shipped
motion adapter), its runs kept apart (`--work` defaults to .toyworld-build/tuning/<the folder's name>).
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cdvideo.apps.worldbuild.claim_report import SUBJECT_KINDS, share
from cdvideo.apps.worldbuild.common import base_digest, study_run
from cdvideo.data.files import write_text_atomic
from cdvideo.data.ranges import COUNT, SEED, Flag, Parser, Range
from cdvideo.math.metrics import bootstrap_ci
from cdvideo.toyworld import MODEL_ID
from cdvideo.toyworld import judge as J
from cdvideo.toyworld.instances import INSTANCES, Instance

STILL_KINDS = ("background", "position", "property", "accessory", "companion")
CLIPS = 1  # render seeds per motion: 4 clips a run (moving left, right, up, down)


@dataclass(frozen=True)
class Setting:
    """One cell of the grid: `cdvideo train` overrides on top of the demo's recipe."""
    lr: float
    steps: int
    spl: float
    token_lr: float | None = None  # None: the K/V's rate, as Custom Diffusion
    pooling: str = "eos"
    initializer: str | None = None  # None: the class word; "{colour}", "{cls}": the instance's body colour, class
    unmasked: float | None = None  # with the photos' subject masks: the loss's weight off the subject
    cutouts: bool = False  # the photos cut out by their masks (as a background remover's PNGs), `masks: alpha`
    vectors: int = 1  # the token's embedding vectors (multi-vector textual inversion)
    flip: bool = True  # the photos mirrored at random (half the samples)
    timesteps: tuple[int, int] = (0, 1000)  # the noise levels trained on: min_timestep, max_timestep
    snr_gamma: float | None = None  # Min-SNR-gamma's loss weighting (`min_snr_gamma`); None: every level alike

    def overrides(self, inst: Instance, cutouts: Path | None = None) -> dict:
        """The cell's `cdvideo train` values for `inst` (`cutouts`: the folder of its cut-out photos, if it asks)."""
        out = {"optimizer.learning_rate": self.lr, "spl.pooling": self.pooling}
        out |= {"optimizer.token_learning_rate": self.token_lr} if self.token_lr is not None else {}
        if self.cutouts:
            out |= {"concepts.0.images": str(cutouts), "concepts.0.masks": "alpha", "unmasked_weight": self.unmasked}
        else:
            out |= {"concepts.0.masks": f"toyworld:{inst.name}", "unmasked_weight": self.unmasked} \
                if self.unmasked is not None else {"concepts.0.masks": None}
        init = self.initializer.format(colour=inst.colour, cls=inst.cls) if self.initializer else None
        out |= {"concepts.0.vectors": self.vectors} if self.vectors > 1 else {}
        out |= {} if self.flip else {"flip": False}
        out |= {} if self.timesteps == (0, 1000) else dict(zip(("min_timestep", "max_timestep"), self.timesteps))
        out |= {} if self.snr_gamma is None else {"min_snr_gamma": self.snr_gamma}
        return out | ({"concepts.0.initializer": init} if init else {})

    def tag(self) -> str:
        return (f"lr{self.lr:g}-{self.steps}-spl{self.spl:g}" + (f"-tok{self.token_lr:g}" if self.token_lr else "")
                + ("" if self.pooling == "eos" else f"-{self.pooling}")
                + (f"-init{self.initializer.translate(str.maketrans('', '', '{} '))}" if self.initializer else "")
                + (f"-masked{self.unmasked:g}" if self.unmasked is not None else "") + ("-cutouts" * self.cutouts)
                + (f"-vec{self.vectors}" if self.vectors > 1 else "") + ("" if self.flip else "-noflip")
                + ("" if self.timesteps == (0, 1000) else "-t{}-{}".format(*self.timesteps))
                + ("" if self.snr_gamma is None else f"-snr{self.snr_gamma:g}"))

    def cells(self) -> str:
        notes = ([f"{self.pooling} pooling"] if self.pooling != "eos" else []) + (
            [f"token initialised from '{self.initializer.format(colour='<colour>', cls='<class>')}'"]
            if self.initializer else []) + (
            [f"subject masks, {self.unmasked:g} off the subject"] if self.unmasked is not None else []) + (
            ["the photos cut out on white, masks from their transparency"] if self.cutouts else []) + (
            [f"{self.vectors} token vectors"] if self.vectors > 1 else []) + ([] if self.flip else ["no mirroring"]) + (
            [] if self.timesteps == (0, 1000) else ["timesteps {}-{}".format(*self.timesteps)]) + (
            [] if self.snr_gamma is None else [f"Min-SNR gamma {self.snr_gamma:g}"])
        return (f"{self.lr:g} | {self.token_lr or self.lr:g} | {self.steps} | {self.spl:g}"
                + (f" ({', '.join(notes)})" if notes else ""))


# Cell 0, which every table compares against: the recipe at SPL 1, as it was until cell 32 (SPL 0.1) replaced it
GRID = (Setting(5e-4, 120, 1.0, unmasked=0.1),  # the photos' subject masks, 0.1 off the subject
        Setting(1e-3, 120, 1.0),  # the recipe before subject masks (`demo.MASKLESS`)
        Setting(5e-4, 120, 1.0),  # the recipe's learning rate without masks
        Setting(1e-3, 120, 1.0, unmasked=0.3),
        Setting(1e-3, 120, 0.0),
        Setting(1e-3, 120, 1.0, token_lr=3e-2), Setting(1e-3, 240, 1.0, token_lr=3e-2),
        Setting(1e-3, 480, 1.0), Setting(1e-3, 480, 1.0, token_lr=3e-2), Setting(1e-3, 480, 0.0, token_lr=3e-2),
        Setting(1e-3, 240, 1.0, pooling="official"),
        Setting(1e-3, 120, 1.0, initializer="ktn"),  # Custom Diffusion's initializer: a rare word
        Setting(1e-3, 120, 1.0, unmasked=0.1), Setting(1e-3, 120, 1.0, unmasked=0.0),
        Setting(1e-3, 120, 0.0, unmasked=0.1), Setting(1e-3, 60, 1.0, unmasked=0.1),
        Setting(5e-4, 180, 1.0, unmasked=0.1), Setting(5e-4, 120, 1.0, initializer="ktn", unmasked=0.1),
        # the token initialised from the subject's body colour word ('yellow'), alone and with its class word
        Setting(5e-4, 120, 1.0, initializer="{colour}", unmasked=0.1),
        Setting(5e-4, 120, 1.0, initializer="{colour} {cls}", unmasked=0.1),
        # the web app's box: background-removed photos (the bundled ones cut out by their masks), `masks: alpha`
        Setting(5e-4, 120, 1.0, unmasked=0.1, cutouts=True), Setting(5e-4, 120, 1.0, unmasked=0.0, cutouts=True),
        # the K/V faster than the token: the colours' binding is the UNet's (the twinless trial), the K/V's to learn
        Setting(1e-3, 120, 1.0, token_lr=5e-4, unmasked=0.1), Setting(2e-3, 120, 1.0, token_lr=5e-4, unmasked=0.1),
        Setting(1e-3, 120, 1.0, token_lr=2.5e-4, unmasked=0.1), Setting(1e-3, 120, 1.0, token_lr=1e-4, unmasked=0.1),
        # on the 14-round model the K/V at 1e-3 reach 80% on the mean: longer, or a little faster still
        Setting(1e-3, 180, 1.0, token_lr=5e-4, unmasked=0.1), Setting(1.5e-3, 120, 1.0, token_lr=5e-4, unmasked=0.1),
        # the two levers that lift apple_tree most, together; then weaker SPL at the recipe's rate (0.1: the recipe)
        Setting(1e-3, 120, 1.0, token_lr=5e-4, initializer="{colour}", unmasked=0.1),
        Setting(5e-4, 120, 0.3, unmasked=0.1), Setting(5e-4, 120, 0.05, unmasked=0.1),
        Setting(5e-4, 120, 0.0, unmasked=0.1), Setting(5e-4, 120, 0.1, unmasked=0.1),
        # the identity lever (K/V faster than the token) at the recipe's SPL 0.1
        Setting(1e-3, 120, 0.1, token_lr=5e-4, unmasked=0.1),
        # the token as several embedding vectors (multi-vector textual inversion): room to bind colours to parts
        Setting(5e-4, 120, 0.1, unmasked=0.1, vectors=2), Setting(5e-4, 120, 0.1, unmasked=0.1, vectors=4),
        # the recipe without mirrored photos: the world never draws a mirrored dot layout or a cup's handle on the left
        Setting(5e-4, 120, 0.1, unmasked=0.1, flip=False),
        # the noise levels trained on (kohya's min/max_timestep): which colour is the body and which the pattern's is
        # settled at high noise, where the recipe spends a uniform share of its 120 steps; and the opposite
        Setting(5e-4, 120, 0.1, unmasked=0.1, timesteps=(300, 1000)),
        Setting(5e-4, 120, 0.1, unmasked=0.1, timesteps=(500, 1000)),
        Setting(5e-4, 120, 0.1, unmasked=0.1, timesteps=(0, 600)),
        # Min-SNR-gamma (kohya's min_snr_gamma): the low noise levels weigh gamma / SNR instead of nothing (5, the
        # paper's, below t = 147; 2 below t = 255; 1 below t = 354, as the 300-1000 cell softened)
        Setting(5e-4, 120, 0.1, unmasked=0.1, snr_gamma=5.0), Setting(5e-4, 120, 0.1, unmasked=0.1, snr_gamma=2.0),
        Setting(5e-4, 120, 0.1, unmasked=0.1, snr_gamma=1.0),
        # which moved apple_tree in the 300-1000 cell: the high noise levels' share of the steps, or the low ones left
        # out? The recipe's range with as many steps at t >= 300 as that cell (171 x 0.7 = 120), and that cell's
        # range with as many as the recipe (84 = 120 x 0.7)
        Setting(5e-4, 171, 0.1, unmasked=0.1), Setting(5e-4, 84, 0.1, unmasked=0.1, timesteps=(300, 1000)))


def stills(weights: Path | None, inst: Instance, subject: str, still_seeds: int, judge,
           kinds: tuple[str, ...] = STILL_KINDS, clip_seeds: int = 0, model: str = MODEL_ID) -> dict:
    """The claim study's scores of `subject` on the stills of `kinds` (rendered on `model` with `weights`, or the
    base alone) and, with `clip_seeds`, on its motion clips."""
    from cdvideo.apps.worldbuild.spl_strength import score  # lazy: start-up time
    from cdvideo.toyworld.scoring import eval_set  # lazy: start-up time

    kinds += ("motion",) if clip_seeds else ()
    return score(weights, inst, subject, eval_set(inst.colour, subject, still_seeds, clip_seeds, kinds), judge, model)


def readings(row: dict) -> dict:
    """Subject identity on stills (the kinds that keep the subject's words), on clips, and stills composition."""
    still = [k for k in SUBJECT_KINDS if k != "motion" and f"identity_{k}" in row]
    return {"stills": float(np.mean([row[f"identity_{k}"] for k in still])), "clips": row["identity_motion"],
            "composition": float(np.mean([row[f"composition_{k}"] for k in STILL_KINDS if f"composition_{k}" in row]))}


def references(inst: Instance, still_seeds: int, judge, model: str = MODEL_ID) -> tuple[dict, dict]:
    """The base model's readings told the class word, and the ceiling's: told the traits."""
    told = tuple(k for k in SUBJECT_KINDS if k in STILL_KINDS)
    return (readings(stills(None, inst, inst.cls, still_seeds, judge, clip_seeds=CLIPS, model=model)),
            readings(stills(None, inst, inst.describe(), still_seeds, judge, told, clip_seeds=CLIPS, model=model)))


def cut_out(inst: Instance, folder: Path) -> Path:
    """The instance's bundled photos cut out by their bundled masks, as RGBA PNGs of the same names (transparent off
    the subject, as a background remover writes them) in `folder`; written once."""
    from cdvideo.data.files import atomic_path  # lazy: start-up time
    from cdvideo.data.photos import image_files, load_folder  # lazy: start-up time
    from cdvideo.toyworld.instances import photos_dir  # lazy: start-up time

    names = [p.name for p in image_files(photos_dir(inst.name))]  # the photos load_folder reads, in its order
    if not all((folder / n).is_file() for n in names):
        folder.mkdir(parents=True, exist_ok=True)
        for name, image in zip(names, load_folder(photos_dir(inst.name), masks=f"toyworld:{inst.name}")):
            with atomic_path(folder / name) as tmp:
                image.save(tmp, format="PNG")
    return folder


def run_dir(work: Path, inst: Instance, setting: Setting, seed: int) -> Path:
    """Where one cell's run on `inst` with training seed `seed` keeps its weights and readings."""
    return work / f"{inst.name}-{setting.tag()}-s{seed}"


def tuned(inst: Instance, work: Path, setting: Setting, seed: int, still_seeds: int, judge,
          model: str = MODEL_ID) -> dict:
    """One run as `cdvideo train` reads it, on `model`, read (cached: weights trained on the UNet `model` has now are
    reused, and their readings for the same number of render seeds by the same judge)."""
    from cdvideo.apps.demo import train_config  # lazy: start-up time

    out = run_dir(work, inst, setting, seed)
    cached = out / f"readings-{still_seeds}-{judge.digest}-{base_digest(model)}.json"
    if cached.is_file():
        return json.loads(cached.read_text())

    def config():
        cutouts = cut_out(inst, work / "cutouts" / inst.name) if setting.cutouts else None
        return train_config(inst, out, setting.steps, setting.spl, {"overwrite": True, "seed": seed, "model": model,
                                                                     **setting.overrides(inst, cutouts)})
    path = study_run(out, config, model)
    found = readings(stills(path, inst, f"sks {inst.cls}", still_seeds, judge, clip_seeds=CLIPS, model=model))
    write_text_atomic(cached, json.dumps(found) + "\n")
    return found


def against(runs: dict[str, list[dict]], recipe: dict[str, list[dict]]) -> str:
    """Identity on stills and clips and composition minus cell 0's, paired on (instance, seed): mean [95%]."""
    cells = []
    for k in ("stills", "clips", "composition"):
        mean, low, high = bootstrap_ci([a[k] - b[k] for n in runs for a, b in zip(runs[n], recipe[n])])
        cells.append(f"{mean:+.3f} [{low:+.3f}, {high:+.3f}]")
    return " / ".join(cells)


def row(setting: Setting, runs: dict[str, list[dict]], refs: dict[str, tuple[dict, dict]],
        recipe: dict[str, list[dict]]) -> str:
    """One table line: means over instances and seeds; the shares per instance (mean over seeds), stills / clips;
    the paired difference from `recipe`'s runs (the cell `--against` names)."""
    mean = {k: np.mean([r[k] for rs in runs.values() for r in rs]) for k in ("stills", "composition", "clips")}
    shares = {on: [share(np.mean([r[on] for r in runs[n]]), refs[n][0][on], refs[n][1][on]) for n in runs]
              for on in ("stills", "clips")}
    return (f"| {setting.cells()} | {mean['stills']:.3f} | {mean['composition']:.3f} | {mean['clips']:.3f} | "
            f"{np.mean(shares['stills']):.2f} | {np.mean(shares['clips']):.2f} | "
            + ", ".join(f"{s:.2f} / {c:.2f}" for s, c in zip(shares["stills"], shares["clips"]))
            + f" | {'(the cell the others are paired with)' if runs is recipe else against(runs, recipe)} |")


def main() -> None:
    p = Parser(prog="python -m cdvideo.apps.worldbuild.tune", description=__doc__.splitlines()[0])
    p.add_argument("--instances", nargs="+", choices=list(INSTANCES), metavar="NAME",
                   default=[n for n, i in INSTANCES.items() if not i.held_out])
    p.add_argument("--seeds", nargs="+", type=Flag(int, SEED), default=[0, 1], help="training seeds per cell")
    p.add_argument("--still-seeds", type=Flag(int, COUNT), default=2, help="render seeds per still prompt")
    p.add_argument("--model", default=MODEL_ID, help="the base: the miniature model (default) or a diffusers folder "
                   "of its architecture")
    p.add_argument("--work", default=None, help="the runs' weights (default: .toyworld-build/tuning, with --model "
                   "a folder in it named as the model's)")
    p.add_argument("--docs", default="docs/toyworld", help="where the table goes (default: %(default)s)")
    p.add_argument("--out", default="tuning.md", help="its file name in --docs (default: %(default)s)")
    p.add_argument("--cells", nargs="+", type=Flag(int, Range(0, len(GRID) - 1)), default=None,
                   help=f"of the grid's cells 0-{len(GRID) - 1}, these only (the --against cell always; default: all)")
    p.add_argument("--against", type=Flag(int, Range(0, len(GRID) - 1)), default=0,
                   help="the cell each row is paired with in the last column (default: %(default)s)")
    args = p.parse_args()
    if args.model != MODEL_ID and not (Path(args.model) / "model_index.json").is_file():
        p.error(f"--model {args.model}: not a diffusers model folder (no model_index.json)")
    work = Path(args.work or ".toyworld-build/tuning" + ("" if args.model == MODEL_ID else f"/{Path(args.model).name}"))
    judge, t0 = J.load(), time.time()
    refs = {n: references(INSTANCES[n], args.still_seeds, judge, args.model) for n in args.instances}
    lines, runs = [], {}
    for k in sorted({args.against, *(args.cells or range(len(GRID)))}, key=lambda k: (k != args.against, k)):
        runs[k] = {n: [tuned(INSTANCES[n], work, GRID[k], s, args.still_seeds, judge, args.model) for s in args.seeds]
                   for n in args.instances}
        lines.append(row(GRID[k], runs[k], refs, runs[args.against]))
        print(f"[{time.time() - t0:5.0f} s] {lines[-1]}", flush=True)
    text = ("| K/V learning rate | token learning rate | steps | SPL | identity, stills | composition | "
            "identity, clips | share of the ceiling, stills | clips | per instance, stills / clips | "
            f"against cell {args.against}: identity, stills / clips / composition |\n"
            "|---|---|---|---|---|---|---|---|---|---|---|\n" + "\n".join(lines) + "\n\n"
            + ("" if args.model == MODEL_ID else f"Base model: `{args.model}`. ")
            + f"Instances: {', '.join(n + ' (held out)' * INSTANCES[n].held_out for n in args.instances)}; "
            f"training seeds {', '.join(map(str, args.seeds))}; "
            "base and spelled-out subject identity, stills / clips: "
            + ", ".join(f"{n} {b['stills']:.2f} / {c['stills']:.2f}, {b['clips']:.2f} / {c['clips']:.2f}"
                        for n, (b, c) in refs.items())
            + f". {26 * args.still_seeds} stills and 4 clips per run (`python -m cdvideo.apps.worldbuild.tune"
            f"{' ' + ' '.join(sys.argv[1:]) if sys.argv[1:] else ''}`, {(time.time() - t0) / 60:.0f} min).\n")
    write_text_atomic(Path(args.docs) / args.out, text)
    print(text)


if __name__ == "__main__":
    main()
