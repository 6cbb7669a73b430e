"""Video-to-video in the miniature world: clips of other objects doing a motion (the circling and zigzag reference
clips of `train-motion`: random objects, never a personal instance) restyled as a personal instance through
`cdvideo animate --video CLIP --strength S` ("a sks ball" with its ClassDiffusion weights, trained at the demo's
setting), against the base model prompted with the class word ("a ball"). Read by the world's judge on every clip:
identity (the instance's traits) and motion kept (the cosine of the judge's track of the output to its track of the
source clip, as motion fidelity is measured).

    python -m cdvideo.apps.worldbuild.v2v_study                      # ~4 min on 2 cores
    python -m cdvideo.apps.worldbuild.v2v_study --strengths 0.5 0.7 --seeds 0 1 2

Writes docs/toyworld/v2v.md (95% bootstrap intervals over the clips) and v2v.json.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from cdvideo.apps.demo import MASKLESS, RENDER, train_config
from cdvideo.data.files import atomic_path, write_text_atomic
from cdvideo.data.ranges import SEED, Flag, Parser, Range
from cdvideo.data.references import read_clip
from cdvideo.data.render_config import Job, Options
from cdvideo.math.metrics import bootstrap_ci
from cdvideo.math.motion import track_similarity
from cdvideo.tasks.render import animate
from cdvideo.tasks.train import train
from cdvideo.toyworld import MODEL_ID, motions
from cdvideo.toyworld import judge as J
from cdvideo.toyworld.instances import Instance, get
from cdvideo.toyworld.world import NOVEL_MOTIONS, NUM_FRAMES

ARMS = ("base", "ClassDiffusion")


def restyle(weights: Path | None, prompt: str, sources: list[Path], strengths: list[float], seeds: list[int],
            out: Path) -> list[list[np.ndarray]]:
    """Every (source, strength, seed) clip through `animate`, as the command renders it: (F, 64, 64, 3) frames."""
    jobs = [Job(prompt=prompt, video=str(s), strength=k, seed=list(seeds), **RENDER) for s in sources
            for k in strengths]
    opts = Options(weights=[str(weights)] if weights else [], model=MODEL_ID, output_dir=str(out), formats=["png"])
    folders = [p for p in animate(opts, jobs) if p.is_dir()]  # in order: job by job, seed by seed
    return [np.stack([np.asarray(Image.open(f).convert("RGB")) for f in sorted(d.glob("*.png"))]) for d in folders]


def score(judge, inst: Instance, clips: list[np.ndarray], sources: list[np.ndarray]) -> list[dict]:
    """Identity and motion kept of each clip against its source."""
    rows = []
    for clip, source in zip(clips, sources):
        reading = J.read(judge, clip)
        kept = track_similarity(motions.track(reading), motions.track(J.read(judge, source)))
        rows.append({"identity": J.identity(reading, inst.appearance), "motion_kept": kept})
    return rows


def write_gifs(docs: Path, source: np.ndarray, clips: dict[str, np.ndarray]) -> None:
    """The first source clip and its restyled clips (seed of the first row) as GIFs, 2x enlarged."""
    for name, frames in {"source": source, **clips}.items():
        images = [Image.fromarray(f).resize((128, 128), Image.Resampling.NEAREST) for f in frames]
        with atomic_path(docs / f"v2v_{name}.gif") as tmp:
            images[0].save(tmp, format="GIF", save_all=True, append_images=images[1:], duration=125, loop=0)


def run(strengths: list[float], seeds: list[int], work: Path, docs: Path) -> dict:
    inst, judge = get("striped_ball"), J.load()  # the study in docs/toyworld/v2v.md
    weights = train(train_config(inst, work / "subject", 120, 1.0, {"overwrite": True, **MASKLESS}))
    sources = [p for m in NOVEL_MOTIONS for p in motions.write_reference_clips(m, work / "sources")]
    frames = [source_frames(p) for p in sources]
    expected = [f for f in frames for _ in strengths for _ in seeds]  # each output's source, in render order
    result = {"instance": inst.name, "strengths": strengths, "seeds": seeds, "sources": [p.name for p in sources],
              "source": score(judge, inst, frames, frames)}
    for arm, w, prompt in (("base", None, f"a {inst.cls}"), ("ClassDiffusion", weights, f"a sks {inst.cls}")):
        clips = restyle(w, prompt, sources, strengths, seeds, work / arm)
        rows = score(judge, inst, clips, expected)
        if arm == "ClassDiffusion":  # the first source, first seed, at each strength
            write_gifs(docs, frames[0], {f"strength_{k}": clips[j * len(seeds)] for j, k in enumerate(strengths)})
        result[arm] = {k: [r for i, r in enumerate(rows) if (i // len(seeds)) % len(strengths) == j]
                       for j, k in enumerate(map(str, strengths))}
    return result


def source_frames(path: Path) -> np.ndarray:
    """A source clip as `animate --video` reads it for a 16-frame 64 px clip at 8 fps: (16, 64, 64, 3) uint8."""
    return read_clip(path, NUM_FRAMES, 8, 64, 64, "source video")


def table(result: dict) -> str:
    def cell(rows: list[dict], key: str) -> str:
        mean, low, high = bootstrap_ci([r[key] for r in rows])
        return f"{mean:.2f} [{low:.2f}, {high:.2f}]"

    n = len(result["sources"]) * len(result["seeds"])
    lines = [f"Instance `{result['instance']}`; {len(result['sources'])} source clips (circling, zigzag of other "
             f"objects) x {len(result['seeds'])} seeds = {n} clips a cell; mean [95% bootstrap interval].", "",
             "| strength | identity, base (\"a ball\") | identity, ClassDiffusion (\"a sks ball\") | "
             "motion kept, base | motion kept, ClassDiffusion |", "|---|---|---|---|---|",
             f"| the source clips | {cell(result['source'], 'identity')} | | 1.00 | |"]
    for k in map(str, result["strengths"]):
        base, cd = result["base"][k], result["ClassDiffusion"][k]
        lines.append(f"| {k} | {cell(base, 'identity')} | {cell(cd, 'identity')} | {cell(base, 'motion_kept')} | "
                     f"{cell(cd, 'motion_kept')} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    p = Parser(description=__doc__.splitlines()[0])
    p.add_argument("--strengths", type=Flag(float, Range(0, 1, above=True)), nargs="+",
                   default=[0.3, 0.5, 0.7, 0.9])
    p.add_argument("--seeds", type=Flag(int, SEED), nargs="+", default=[0, 1])
    p.add_argument("--docs", default="docs/toyworld", help="where the table goes (default: %(default)s)")
    args = p.parse_args()
    t0 = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        result = run(args.strengths, args.seeds, Path(tmp), Path(args.docs))
    result["minutes"] = round((time.time() - t0) / 60, 1)
    docs = Path(args.docs)
    write_text_atomic(docs / "v2v.json", json.dumps(result, indent=1) + "\n")
    write_text_atomic(docs / "v2v.md", table(result) + f"\n{result['minutes']} min on this machine.\n")
    print(table(result))


if __name__ == "__main__":
    main()
