"""`cdvideo demo --motion`: a motion the miniature world's pretraining never shows (circling or zigzag), learnt from
3 reference clips of other objects on other backgrounds with `cdvideo train-motion`, then rendered on a personal
instance ("a sks ball on a blue background" + the motion LoRA). The world's judge reads each clip: motion fidelity
(its per-frame centre and size track against the motion's), appearance leakage (the references' colour or
background shown instead of the prompt's) and identity. The same functions serve the study
(`python -m cdvideo.apps.worldbuild.motion_study`) and the tests."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from cdvideo.apps.demo import RENDER, TOKEN
from cdvideo.data.files import slug
from cdvideo.data.motion_config import MotionTrainConfig, load_motion_config
from cdvideo.math.motion import track_similarity
from cdvideo.models.motion_lora import apply_motion_loras
from cdvideo.pipelines.build import video_pipeline
from cdvideo.pipelines.personalized import load_personalized
from cdvideo.pipelines.registry import load_adapter, make_scheduler
from cdvideo.tasks.train_motion import train_motion
from cdvideo.toyworld import MODEL_ID, motions
from cdvideo.toyworld import judge as J
from cdvideo.toyworld.instances import Instance

# configs/motion/toyworld_circling.yaml's settings (a test keeps the two the same)
MOTION_TRAIN = {"model": MODEL_ID, "prompt": "an object on a background", "resolution": 64, "num_frames": 16,
                "fps": 8, "rank": 16, "max_steps": 600, "learning_rate": 3e-3, "spatial_learning_rate": 3e-4,
                "loss_weighting": "high-noise", "checkpoint_every": 200, "validation.every": 0}
VARIANTS = {"dual path (MotionDirector)": {"spatial_learning_rate": 3e-3},  # both LoRAs at one learning rate
            "dual path, spatial lr / 10": {"spatial_learning_rate": 3e-4},  # the default here (docs/toyworld.md)
            "temporal only": {"spatial": False, "debiased": False}}  # no appearance path
DEFAULT = "dual path, spatial lr / 10"
BACKGROUNDS = ("blue", "checkered", "sandy", "grassy", "green", "striped", "gray", "dotted", "black")


def motion_config(references: Path, output_dir: Path, variant: str = DEFAULT,
                  extra: dict | None = None) -> MotionTrainConfig:
    """The demo's train-motion run, as configs/motion/toyworld_circling.yaml, with typed `extra` values on top."""
    values = {**MOTION_TRAIN, **VARIANTS[variant], "references": [str(references)], "output_dir": str(output_dir),
              "report_to": "none", **(extra or {})}
    return load_motion_config(None, values=values)


def learn(motion: str, work: Path, seed: int = 0, variant: str = DEFAULT,
          extra: dict | None = None) -> Path:
    """Write the motion's 3 reference clips (seeded), train its motion LoRA; the LoRA file (reused if there)."""
    refs = work / f"references-{motion}-s{seed}"
    motions.write_reference_clips(motion, refs, seed=seed)
    out = work / f"{motion}-{slug(variant)}-s{seed}"
    if (out / "motion_lora.safetensors").is_file():
        return out / "motion_lora.safetensors"
    return train_motion(motion_config(refs, out, variant, {"seed": seed, **(extra or {})}))


@dataclass
class Clip:
    prompt: str
    background: str
    seed: int


def clips_for(inst: Instance, motion: str, ref_seed: int, n_backgrounds: int = 4, seeds: tuple = (0, 1),
              subject: str | None = None) -> list[Clip]:
    """Prompts on backgrounds none of the references has, each rendered with `seeds`."""
    used = {s.background for s in motions.reference_scenes(motion, seed=ref_seed)}
    backgrounds = [b for b in BACKGROUNDS if b not in used][:n_backgrounds]
    subject = subject or f"{TOKEN} {inst.cls}"
    return [Clip(f"a {subject} on a {b} background", b, s) for b in backgrounds for s in seeds]


@torch.no_grad()
def render(weights: Path | None, clips: list[Clip], loras: list[tuple[Path, float]], **settings) -> list[list]:
    """Each clip's frames: the subject weights (if any) and the motion LoRAs merged into the world's adapter;
    `settings` (num_inference_steps, guidance_scale) replace the demo's."""
    from cdvideo.data import motion_lora  # lazy: start-up time

    m, _, _ = load_personalized(MODEL_ID, [str(weights)] if weights else [])
    pipe = video_pipeline(m, load_adapter(MODEL_ID, torch.float32),
                          make_scheduler("ddim", m["scheduler"].config, animatediff=True))
    apply_motion_loras(pipe.unet, [(motion_lora.read(p), s, p.name) for p, s in loras], MODEL_ID)
    pipe.set_progress_bar_config(disable=True)
    return [pipe(c.prompt, num_frames=16, output_type="pil", generator=torch.Generator().manual_seed(c.seed),
                 **(RENDER | settings)).frames[0] for c in clips]


def leaked(inst: Instance, motion: str, ref_seed: int, asked_background: str, background: str, colour: str) -> bool:
    """Whether a clip shows a reference's background instead of the asked one, or a reference's colour that is not
    the instance's own (body or pattern)."""
    refs = motions.reference_scenes(motion, seed=ref_seed)
    ref_colours = {s.colour for s in refs} - {inst.colour, inst.pattern_colour}
    return (background in {s.background for s in refs} and background != asked_background) or colour in ref_colours


def score(judge, inst: Instance, motion: str, ref_seed: int, clips: list[Clip], frames: list[list]) -> dict:
    """Mean motion fidelity, appearance leakage and identity over the clips, and the per-clip values."""
    target = motions.true_track(motions.reference_scenes(motion, seed=ref_seed)[0])
    per = []
    for c, f in zip(clips, frames):
        reading = J.read(judge, f)
        bg, colour = reading.label("background"), reading.label("colour")
        per.append({"fidelity": track_similarity(motions.track(reading), target),
                    "leakage": float(leaked(inst, motion, ref_seed, c.background, bg, colour)),
                    "identity": J.identity(reading, inst.appearance), "background": bg, "colour": colour})
    return {k: float(np.mean([p[k] for p in per])) for k in ("fidelity", "leakage", "identity")} | {"clips": per}


def write_gif(frames: list, path: Path, upscale: int = 4) -> Path:
    """A clip enlarged `upscale` times (nearest), written atomically."""
    from PIL import Image  # lazy: start-up time

    from cdvideo.data.files import atomic_path  # lazy: start-up time

    big = [f.resize((f.width * upscale, f.height * upscale), Image.Resampling.NEAREST) for f in frames]
    with atomic_path(path) as tmp:
        big[0].save(tmp, format="GIF", save_all=True, append_images=big[1:], duration=125, loop=0)
    return path


def run(motion: str, inst: Instance, out: Path, seed: int = 0) -> tuple[dict, list[Path]]:
    """The motion demo into `out`: subject weights (the demo's run), the motion LoRA from 3 reference clips, then
    the same prompts without and with it, scored; returns the rows and the files written."""
    from cdvideo.apps.demo import TRAIN, train_config  # lazy: start-up time
    from cdvideo.tasks.train import train  # lazy: start-up time

    judge, written = J.load(), []
    subject = train(train_config(inst, out / "subject", TRAIN["max_steps"], TRAIN["spl.weight"]))
    lora = learn(motion, out, seed)
    clips = clips_for(inst, motion, seed, n_backgrounds=2, seeds=(0,))
    rows = {}
    for name, loras in (("base adapter (no words exist for the motion)", []), ("+ motion LoRA", [(lora, 1.0)])):
        frames = render(subject, clips, loras)
        rows[name] = {k: v for k, v in score(judge, inst, motion, seed, clips, frames).items() if k != "clips"}
        tag = "lora" if loras else "base"
        written += [write_gif(f, out / f"{tag}_{c.background}.gif") for c, f in zip(clips, frames)]
    return rows, [subject, lora, *written]


def table(motion: str, inst: Instance, rows: dict) -> str:
    """The demo's rows as a markdown table."""
    lines = [f"{motion}, learnt from 3 clips of other objects, on {inst.name} (read by the world's judge):", "",
             "| | motion fidelity | appearance leakage | identity |", "|---|---|---|---|"]
    lines += [f"| {name} | {r['fidelity']:.2f} | {r['leakage']:.2f} | {r['identity']:.2f} |"
              for name, r in rows.items()]
    return "\n".join(lines)
