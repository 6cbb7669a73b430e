"""`cdvideo eval`: DreamBench-style generation and scoring, split across processes, resumable.

Layout of the output folder: generated/ (images or clips with sidecars), scores/ (one JSON per sample),
samples.csv, summary.json, summary.md. A restart skips what generated/ and scores/ already hold.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
import yaml
from PIL import Image
from tqdm.auto import tqdm

from cdvideo.data import builtins, weights
from cdvideo.data.clips import read_sidecar, write_sidecar
from cdvideo.data.files import asset_text, slug, text_lines, write_text_atomic
from cdvideo.data.formats import token_groups
from cdvideo.data.photos import load_folder
from cdvideo.errors import CdvideoError
from cdvideo.data.references import read_references
from cdvideo.math import metrics, motion
from cdvideo.models import extractors, flow
from cdvideo.tasks import render

METRICS = ("clip_t", "clip_i", "dino_i", "blip_t", "temporal", "dynamic_degree", "motion_fidelity")
JUDGE_METRICS = ("identity", "composition")  # what the registered judges read (--judge toyworld)


@dataclass
class EvalOptions:
    output_dir: str = "eval"
    weights: list[str] = field(default_factory=list)
    generated: str | None = None
    references: str | None = None
    prompts: str = "dreambench"
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2, 3])
    video: bool = False
    metrics: list[str] = field(default_factory=lambda: ["clip_t", "clip_i", "dino_i", "blip_t"])
    clip_model: str | None = None
    dino_model: str | None = None
    blip_model: str | None = None
    render: dict = field(default_factory=dict)  # settings passed to sample/animate (model, steps, size...)
    judge: str | None = None  # "toyworld": identity and composition read by the miniature world's judge
    motion_references: str | None = None  # clips of the motion wanted: motion fidelity of each generated clip


def dreambench_prompts(class_word: str) -> list[str]:
    """The DreamBench prompt templates for this class: live subjects (dogs, cats) or objects."""
    data = yaml.safe_load(asset_text("dreambench.yaml"))
    return data["live" if class_word in data["live_classes"] else "object"]


def prompt_templates(source: str, class_word: str) -> list[str]:
    if source == "dreambench":
        return dreambench_prompts(class_word)
    path = Path(source)
    if not path.is_file():
        raise CdvideoError(f"--prompts {source}: neither 'dreambench' nor a file")
    lines = text_lines(path.read_text())
    if not lines:
        raise CdvideoError(f"{path}: holds no prompts")
    return lines


def generate(opts: EvalOptions, state) -> Path:
    """Render this process's share of (concept x prompt x seed) that generated/ lacks."""

    gen_dir = Path(opts.output_dir) / "generated"
    jobs = []
    for token, class_word in _concepts(opts.weights):
        for tpl in prompt_templates(opts.prompts, class_word):
            prompt = tpl.format(token=token, class_word=class_word)
            jobs += [(prompt, seed) for seed in opts.seeds if not (gen_dir / f"{slug(prompt)}_s{seed}.json").exists()]
    mine = jobs[state.process_index::state.num_processes]
    if mine:
        defaults = {} if opts.video else dict(render.IMAGE_DEFAULTS)
        settings = {**defaults, **{k: v for k, v in opts.render.items() if k in render.Job.__dataclass_fields__}}
        job_list = [render.Job(**{**settings, "prompt": p, "seed": [s]}) for p, s in mine]
        ropts = render.Options(weights=opts.weights, output_dir=str(gen_dir), formats=["mp4", "png"],
                               grid=False, **{k: v for k, v in opts.render.items()
                                              if k in render.Options.__dataclass_fields__})
        (render.animate if opts.video else render.sample)(ropts, job_list)
    state.wait_for_everyone()
    return gen_dir


def _concepts(paths: list[str]) -> list[tuple[str, str]]:
    """(token, class word) of every concept in the weights file(s) (a multi-vector token's name once)."""
    metas = [weights.load_metadata(p) for p in paths]
    return [(name, meta["class_words"][idx[0]]) for meta in metas for name, idx in token_groups(meta["tokens"])]


def media(sidecar: Path, record: dict) -> list[tuple[str, list[Image.Image]]]:
    """(name, frames) of each image or clip a sidecar describes; an image is a clip of one frame."""
    stem = sidecar.with_suffix("")
    if record.get("kind") == "video":
        frames_dir = stem.parent / f"{stem.name}_frames"
        if frames_dir.is_dir():
            return [(frames_dir.name, [Image.open(p).convert("RGB") for p in sorted(frames_dir.glob("*.png"))])]
        for suffix in (".mp4", ".gif", ".webp"):
            if stem.with_suffix(suffix).is_file():
                return [(stem.name + suffix, read_frames(stem.with_suffix(suffix)))]
        return []
    images = sorted(stem.parent.glob(f"{stem.name}_[0-9]*.png"))
    return [(p.name, [Image.open(p).convert("RGB")]) for p in images]


def read_frames(path: Path) -> list[Image.Image]:
    if path.suffix == ".mp4":
        import imageio.v2 as imageio  # lazy: start-up time

        with imageio.get_reader(str(path), format="ffmpeg") as reader:
            return [Image.fromarray(f) for f in reader]
    with Image.open(path) as im:
        frames = []
        for i in range(getattr(im, "n_frames", 1)):
            im.seek(i)
            frames.append(im.convert("RGB"))
        return frames


class Scorer:
    """Loads the extractors once; scores one sample (list of frames) against its prompt and references."""

    def __init__(self, opts: EvalOptions, device: str):
        want = set(opts.metrics) - {"none"}
        unknown = want - set(METRICS)
        if unknown:
            raise CdvideoError(f"--metrics: unknown {', '.join(sorted(unknown))}; choose from {', '.join(METRICS)}")
        need_clip = want & {"clip_t", "clip_i", "temporal"}
        self.clip = extractors.load("clip", opts.clip_model, device) if need_clip else None
        self.dino = extractors.load("dino", opts.dino_model, device) if "dino_i" in want else None
        self.blip = extractors.load("blip", opts.blip_model, device) if "blip_t" in want else None
        self.metrics = want
        self.judge = self._load_judge(opts.judge)
        self._refs: dict[str, dict] = {}
        self.motion_refs = motion_tracks(opts.motion_references) if opts.motion_references else None

    @staticmethod
    def _load_judge(name: str | None) -> builtins.Scorer | None:
        return builtins.scorer(name) if name is not None else None

    def references(self, folder: str | None) -> dict:
        if folder is None:
            return {}
        if folder not in self._refs:
            images = load_folder(folder)
            self._refs[folder] = {"clip": self.clip.images(images) if self.clip else None,
                                  "dino": self.dino.images(images) if self.dino else None}
            if self.judge is not None:
                self._refs[folder]["appearance"] = self.judge.reference(images)
        return self._refs[folder]

    def score(self, frames: list[Image.Image], text: str, refs: dict) -> dict:
        nan = float("nan")
        out = {m: nan for m in METRICS + JUDGE_METRICS}
        if self.judge is not None:
            out.update(self.judge.score(frames, text, refs.get("appearance")))
        clip_img = self.clip.images(frames) if self.clip else None
        if "clip_t" in self.metrics:
            out["clip_t"] = float(metrics.paired_cosine(clip_img, self.clip.texts([text] * len(frames))).mean())
        if "clip_i" in self.metrics and refs.get("clip") is not None:
            out["clip_i"] = float(metrics.mean_cosine_to_set(clip_img, refs["clip"]).mean())
        if "dino_i" in self.metrics and refs.get("dino") is not None:
            out["dino_i"] = float(metrics.mean_cosine_to_set(self.dino.images(frames), refs["dino"]).mean())
        if "blip_t" in self.metrics:
            img, txt = self.blip.images(frames), self.blip.texts([text] * len(frames))
            score = metrics.max_query_cosine(img, txt) if img.dim() == 3 else metrics.paired_cosine(img, txt)
            out["blip_t"] = float(score.mean())
        if len(frames) > 1 and clip_img is not None:
            out["temporal"] = metrics.temporal_consistency(clip_img)
        if len(frames) > 1:  # Farneback flow: how much the clip moves, and how like the references
            flows = flow.farneback(frames)
            out["dynamic_degree"] = motion.dynamic_degree(flows)
            if self.motion_refs:
                out["motion_fidelity"] = motion.motion_fidelity([motion.flow_track(flows)], self.motion_refs)
        return out


def motion_tracks(folder: str) -> list:
    """The flow tracks of the reference clips in `folder` (or the one clip given), 16 frames at 8 fps."""
    clips = read_references([folder], num_frames=16, fps=8, size=flow.SIZE)
    return [motion.flow_track(flow.farneback(list(c))) for c in clips]



def reference_folder(opts: EvalOptions, record: dict) -> tuple[str | None, str]:
    """The subject photos for a sample (--references, else the training images of the token it shows), and why
    there are none when there are none (CLIP-I and DINO-I need them)."""
    if opts.references:
        return opts.references, ""
    why = "its sidecar names no weights file"
    for wrec in record.get("weights", []):
        try:
            configs = weights.load_metadata(wrec["path"]).get("config")
        except CdvideoError as e:
            why = f"its weights file cannot be read ({e})"
            continue
        configs = configs if isinstance(configs, list) else [configs]
        why = f"no training photos of a token in the prompt are found from {Path(wrec['path']).name}"
        for cfg in filter(None, configs):
            for c in cfg.get("concepts", []):
                if c["token"] in record.get("prompt", "") and builtins.images_folder(c["images"]).is_dir():
                    return c["images"], ""
    return None, why


def score_all(opts: EvalOptions, gen_dir: Path, state) -> list[dict]:
    """Score this process's share of samples missing from scores/; then every process's rows, gathered."""
    score_dir = Path(opts.output_dir) / "scores"
    sidecars = sorted(gen_dir.glob("*.json"))
    if not sidecars:
        raise CdvideoError(f"{gen_dir}: no sidecar JSON files (made by cdvideo sample/animate) to score")
    todo = [s for s in sidecars if not (score_dir / s.name).exists()][state.process_index::state.num_processes]
    if todo:
        scorer, warned = Scorer(opts, str(state.device)), set()
        for sidecar in tqdm(todo, desc="scoring", disable=not state.is_local_main_process):
            record = read_sidecar(sidecar)
            prompt = record.get("prompt")
            prompt = prompt if isinstance(prompt, str) else " ".join(dict(prompt).values())
            text = metrics.strip_tokens(prompt, record.get("tokens", []))
            folder, why = reference_folder(opts, record)
            if folder is None and {"clip_i", "dino_i"} & scorer.metrics and why not in warned:
                warned.add(why)
                tqdm.write(f"clip_i, dino_i not computed for {sidecar.name}: {why}; give --references DIR")
            refs = scorer.references(folder)
            rows = [{"file": name, "prompt": prompt, "text": text, "seed": record.get("seed"),
                     **scorer.score(frames, text, refs)} for name, frames in media(sidecar, record)]
            write_sidecar(score_dir / sidecar.name, {"rows": rows})
    state.wait_for_everyone()
    return [row for s in sidecars if (score_dir / s.name).exists()
            for row in json.loads((score_dir / s.name).read_text())["rows"]]


def write_tables(rows: list[dict], out: Path, names: list[str]) -> list[Path]:
    """samples.csv (one row per image or clip), summary.json (per prompt and overall), summary.md."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=["file", "prompt", "text", "seed", *names], extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomic(out / "samples.csv", buf.getvalue())
    prompts = sorted({r["prompt"] for r in rows})
    per_prompt = {p: {m: metrics.summarize([r[m] for r in rows if r["prompt"] == p]) for m in names}
                  for p in prompts}
    overall = {m: metrics.summarize([r[m] for r in rows]) for m in names}
    write_sidecar(out / "summary.json", {"overall": overall, "per_prompt": per_prompt, "samples": len(rows)})
    fmt = lambda s: "-" if s["mean"] is None else f"{s['mean']:.4f}"  # noqa: E731
    lines = ["| prompt | n | " + " | ".join(names) + " |", "|---|---|" + "---|" * len(names)]
    for p in prompts:
        n = sum(r["prompt"] == p for r in rows)
        lines.append(f"| {p} | {n} | " + " | ".join(fmt(per_prompt[p][m]) for m in names) + " |")
    lines.append(f"| **overall** | {len(rows)} | " + " | ".join(f"**{fmt(overall[m])}**" for m in names) + " |")
    write_text_atomic(out / "summary.md", "\n".join(lines) + "\n")
    return [out / "samples.csv", out / "summary.json", out / "summary.md"]


def evaluate(opts: EvalOptions) -> list[Path]:
    """Generate (unless --generated) and score; the main process writes the tables."""
    from accelerate import PartialState  # lazy: start-up time

    if bool(opts.weights) == bool(opts.generated):
        raise CdvideoError("give --weights (generate, then score) or --generated DIR (score existing samples)")
    if opts.generated and not Path(opts.generated).is_dir():
        raise CdvideoError(f"--generated {opts.generated}: folder not found")
    state = PartialState(cpu=not torch.cuda.is_available())  # gloo on CPU under torchrun or accelerate
    gen_dir = Path(opts.generated) if opts.generated else generate(opts, state)
    rows = score_all(opts, gen_dir, state)
    clips = any(r["dynamic_degree"] == r["dynamic_degree"] for r in rows)  # NaN unless a sample has frames
    names = [m for m in METRICS + JUDGE_METRICS if m in opts.metrics or (opts.judge and m in JUDGE_METRICS)
             or (m == "temporal" and clips and "none" not in opts.metrics)
             or (m == "dynamic_degree" and clips) or (m == "motion_fidelity" and opts.motion_references)]
    if not state.is_main_process:
        return []
    return write_tables(rows, Path(opts.output_dir), names)
