"""What a build's image model draws when told, read by the build's judge:

    python -m cdvideo.apps.worldbuild.drawing                        # toyworld-build/unet, ~2 minutes
    python -m cdvideo.apps.worldbuild.drawing --unet toyworld-build/unet.round
    python -m cdvideo.apps.worldbuild.drawing --unet toyworld-build/unet.round --clips 4   # and on clips, ~2 min more

- the spelled-out identity of each personal instance ("a yellow ball with purple stripes on a gray background"):
  the ceiling of any personalization of it, since a tuned token can at best say what these words say; and each
  trait's share of it (class, colour, pattern, pattern colour);
- the same reading for each instance's colours and pattern on another class ("a yellow heart with purple
  stripes"), an appearance pretraining shows (how often: `seen`): whether a missed trait is one the model cannot
  compose or one it cannot draw at all; with --against, the paired difference from an earlier measurement;
- with --clips, the spelled-out identity on clips (with a motion, through the build's motion adapter), and on stills
  told the clips' words (the image model alone: its share of what the clips lose);
  with --motion-words 0.4, the clips told their motion for the first 40% of the steps only (prompt editing);
- the accessory (kind and colour) and the companion (class, colour, side) on prompts that ask for them;
- class, colour, background and position on the world's fixed image prompts.
Prints one JSON object (and writes it to --out when given).
"""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from cdvideo.apps.worldbuild.common import SD_SCHEDULE, log
from cdvideo.apps.worldbuild.plans import PRETRAIN
from cdvideo.data.files import write_text_atomic
from cdvideo.data.ranges import Flag, Parser, Range
from cdvideo.errors import CdvideoError
from cdvideo.math.metrics import bootstrap_ci
from cdvideo.models.architectures import tokenizer_dir
from cdvideo.toyworld import scoring
from cdvideo.toyworld import judge as J
from cdvideo.toyworld.instances import INSTANCES, Instance
from cdvideo.toyworld.world import Scene


def components(work: Path, unet: Path) -> dict:
    """The build's model parts as cdvideo's pipelines take them (float32, DDIM with SD1.5's schedule)."""
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel  # lazy: start-up time
    from transformers import CLIPTextModel, CLIPTokenizer  # lazy: start-up time

    return dict(text_encoder=CLIPTextModel.from_pretrained(str(work / "text_encoder")).float(),
                vae=AutoencoderKL.from_pretrained(str(work / "vae")).float(),
                unet=UNet2DConditionModel.from_pretrained(str(unet)).float(),
                tokenizer=CLIPTokenizer.from_pretrained(str(tokenizer_dir())),
                scheduler=DDIMScheduler(**SD_SCHEDULE, set_alpha_to_one=False))


@torch.no_grad()
def draw(pipe, prompts: list[scoring.EvalPrompt], guidance: float, steps: int, batch: int = 24) -> list[list]:
    """One image per prompt, each from its own seed (a prompt's image does not depend on the batch)."""
    out = []
    for i in range(0, len(prompts), batch):
        chunk = prompts[i:i + batch]
        gens = [torch.Generator().manual_seed(p.seed) for p in chunk]
        images = pipe([p.text for p in chunk], num_inference_steps=steps, guidance_scale=guidance, generator=gens,
                      output_type="np").images
        out += [[(np.asarray(im) * 255).round().astype(np.uint8)] for im in images]
    return out


# each instance's colours and pattern on a class whose shape takes the pattern: an appearance pretraining shows
OTHER_CLASS = {"ball": "heart", "star": "moon", "tree": "cup", "box": "heart", "heart": "box", "cup": "ball"}


def on_other_class(inst: Instance) -> Instance:
    return replace(inst, name=f"{inst.name} as a {OTHER_CLASS[inst.cls]}", cls=OTHER_CLASS[inst.cls])


def pretraining_appearances(work: Path) -> Counter | None:
    """How often each appearance is among the pretraining stills (work/images.json), None without them."""
    labels = work / f"{PRETRAIN[0].name}.json"
    if not labels.is_file():
        return None
    return Counter(Scene(**d).appearance for d in json.loads(labels.read_text()))


def spelled_out(judge, pipe, inst: Instance, n: int, guidance: float, steps: int,
                 clips: bool = False) -> tuple[list[float], dict]:
    """The instance's identity on each of n spelled-out prompts, and each trait's share (which trait fails); `clips`:
    stills drawn from its clips' words ('a big green tree with red dots moving left on ...', the same seeds)."""
    prompts = scoring.spelled_prompts(inst, n, clips)
    readings = [J.read(judge, frames) for frames in draw(pipe, prompts, guidance, steps)]
    traits = {t: round(float(np.mean([J.identity(r, inst.appearance, (t,)) for r in readings])), 4) for t in J.TRAITS}
    return [round(J.identity(r, inst.appearance), 4) for r in readings], traits


def words_after(vpipe, text: str, step: int):
    """A `callback_on_step_end` that conditions the steps after the first `step` on `text` instead of the prompt
    (prompt editing, as AUTOMATIC1111's [a:b:step] and ComfyUI's ConditioningSetTimestepRange)."""
    cond, _ = vpipe.encode_prompt(text, vpipe.device, 1, False)  # (1, 77, D)

    def swap(pipe, i: int, t, tensors: dict) -> dict:
        if i != step - 1:
            return {}
        rows = tensors["prompt_embeds"]  # (2F, 77, D): the negative prompt's F rows, then the prompt's (F: no CFG)
        kept = len(rows) // 2 if pipe.do_classifier_free_guidance else 0
        return {"prompt_embeds": torch.cat([rows[:kept], cond.expand(len(rows) - kept, -1, -1)])}
    return swap


def clip_readings(judge, vpipe, inst: Instance, n_clips: int, guidance: float, steps: int,
                  motion_words: float = 1.0) -> list[tuple]:
    """The instance's identity on each of n_clips spelled-out 16-frame clips (a motion each) through `vpipe`, and
    whether the judge reads the prompted motion; `motion_words` < 1: the motion's words only for that share of the
    steps, the rest told the same words without it."""
    prompts, until = scoring.spelled_prompts(inst, n_clips, clips=True), round(motion_words * steps)

    def render(p: scoring.EvalPrompt) -> list:
        switch = dict(callback_on_step_end=words_after(vpipe, scoring.without_motion(p), until),
                      callback_on_step_end_tensor_inputs=["prompt_embeds"]) if 0 < until < steps else {}
        return vpipe(p.text if until else scoring.without_motion(p), num_frames=16, num_inference_steps=steps,
                     guidance_scale=guidance, output_type="pil", generator=torch.Generator().manual_seed(p.seed),
                     **switch).frames[0]
    readings = [J.read(judge, render(p)) for p in prompts]
    return [(J.identity(r, inst.appearance), J.motion(r) == p.asked["motion"]) for r, p in zip(readings, prompts)]


@torch.no_grad()
def spelled_out_clips(work: Path, m: dict, judge, n_clips: int, guidance: float, steps: int,
                      free_init: bool = False, motion_words: float = 1.0) -> dict:
    """clip_readings of every instance through the build's motion adapter (with FreeInit's noise re-initialisation,
    3 iterations, as `cdvideo animate --free-init`): the identity clips can at best reach (the report's reading,
    with this UNet)."""
    from diffusers import MotionAdapter  # lazy: start-up time

    from cdvideo.pipelines.build import video_pipeline  # lazy: start-up time
    from cdvideo.pipelines.registry import make_scheduler  # lazy: start-up time
    from cdvideo.tasks.conditioning import FREE_INIT  # lazy: start-up time

    adapter = MotionAdapter.from_pretrained(str(work / "motion_adapter"))
    pipe = video_pipeline(m, adapter, make_scheduler("ddim", m["scheduler"].config, animatediff=True))
    pipe.set_progress_bar_config(disable=True)
    if free_init:
        pipe.enable_free_init(**FREE_INIT)
    return {name: clip_readings(judge, pipe, inst, n_clips, guidance, steps, motion_words)
            for name, inst in INSTANCES.items()}


def against(result: dict, other: dict) -> dict:
    """The paired difference (this minus the other measurement) of the spelled-out identity over the same prompts
    and seeds, instances and other classes together, with its 95% bootstrap interval."""
    mine, theirs = result["per_image"], other.get("per_image")
    if not theirs or theirs.keys() != mine.keys() or any(len(theirs[k]) != len(mine[k]) for k in mine):
        raise CdvideoError("it holds no per-image identities of the same prompts; measure it again with this --n")
    diffs = [a - b for k in mine for a, b in zip(mine[k], theirs[k])]
    mean, low, high = bootstrap_ci(diffs)
    return {"unet": other["unet"], "difference": round(mean, 4), "low": round(low, 4), "high": round(high, 4),
            "n": len(diffs)}


def measure(work: Path, unet: Path, n: int = 16, guidance: float = 5.0, steps: int = 25, clips: int = 0,
            free_init: bool = False, judge_path: Path | None = None, motion_words: float = 1.0) -> dict:
    """Spelled-out identity per instance (and on another class; on `clips` clips each when asked), and the rates
    of the asked attributes per prompt set; read by the judge at `judge_path` (default the judge stage's, which every
    reading of the build's history used)."""
    from cdvideo.pipelines.build import image_pipeline  # lazy: start-up time

    judge, m = J.load(judge_path or work / "judge.safetensors"), components(work, unet)
    pipe = image_pipeline(m)  # stills: DPM-Solver++ (the pipelines' default), as every reading of the build's history
    pipe.set_progress_bar_config(disable=True)
    out: dict = {"unet": str(unet), "judge": judge.digest, "guidance": guidance, "steps": steps, "spelled_out": {},
                 "spelled_out_traits": {}, "other_class": {}, "per_image": {}}
    seen = pretraining_appearances(work)
    for name, inst in INSTANCES.items():
        out["per_image"][name], out["spelled_out_traits"][name] = spelled_out(judge, pipe, inst, n, guidance, steps)
        out["spelled_out"][name] = round(float(np.mean(out["per_image"][name])), 4)
        other = on_other_class(inst)
        out["per_image"][other.name], traits = spelled_out(judge, pipe, other, n, guidance, steps)
        out["other_class"][other.name] = {"identity": round(float(np.mean(out["per_image"][other.name])), 4),
                                          "seen": seen and seen[other.appearance], **traits}
    for kind, prompts in (("accessory", scoring.accessory_prompts(24)), ("companion", scoring.companion_prompts(24)),
                          ("image", scoring.image_prompts(48))):
        out[kind] = {k: round(v, 4) for k, v in scoring.score(judge, draw(pipe, prompts, guidance, steps),
                                                              prompts).honoured.items()}
    if clips:
        out["per_still_told_motion"] = {k: spelled_out(judge, pipe, i, clips, guidance, steps, clips=True)[0]
                                        for k, i in INSTANCES.items()}
        out["told_motion"] = {k: round(float(np.mean(v)), 4) for k, v in out["per_still_told_motion"].items()}
        read = spelled_out_clips(work, m, judge, clips, guidance, steps, free_init, motion_words)
        out["free_init"], out["motion_words"] = free_init, motion_words
        out["per_clip"] = {k: [round(i, 4) for i, _ in v] for k, v in read.items()}
        out["spelled_out_clips"] = {k: round(float(np.mean(v)), 4) for k, v in out["per_clip"].items()}
        out["clip_motion"] = round(float(np.mean([hit for v in read.values() for _, hit in v])), 4)
    return out


def main() -> None:
    p = Parser(prog="python -m cdvideo.apps.worldbuild.drawing", description=__doc__.splitlines()[0])
    p.add_argument("--work", default="toyworld-build", help="the build folder (default: %(default)s)")
    p.add_argument("--unet", default=None, help="a UNet folder (default: WORK/unet)")
    p.add_argument("--n", type=Flag(int, Range(1, 1000)), default=16, help="images per instance (default: 16)")
    p.add_argument("--guidance", type=Flag(float, Range(1, 30)), default=5.0)
    p.add_argument("--steps", type=Flag(int, Range(1, 1000)), default=25,
                   help="sampler steps: DPM-Solver++ on stills, DDIM on clips (default: 25)")
    p.add_argument("--clips", type=Flag(int, Range(0, 1000)), default=0,
                   help="also clips per instance, spelled out with a motion, through WORK/motion_adapter (default: 0)")
    p.add_argument("--free-init", action="store_true", help="the clips with FreeInit (3 iterations, as `cdvideo "
                   "animate --free-init`)")
    p.add_argument("--motion-words", type=Flag(float, Range(0, 1)), default=1.0, metavar="SHARE",
                   help="the clips told their motion for this share of the steps only, then the same words without it "
                   "(default: 1, all)")
    p.add_argument("--judge", default=None, metavar="SAFETENSORS", help="the judge that reads (default: "
                   "WORK/judge.safetensors, the judge stage's, as the build's history; the shipped one: "
                   "cdvideo/toyworld/assets/judge.safetensors)")
    p.add_argument("--out", default=None, help="also write the JSON here")
    p.add_argument("--against", default=None, metavar="JSON", help="an earlier measurement (--out) of another UNet: "
                   "the paired difference of the spelled-out identity, with its 95%% interval")
    args = p.parse_args()
    if args.against and not Path(args.against).is_file():
        p.error(f"--against {args.against}: no such file (an earlier --out)")
    if args.judge and not Path(args.judge).is_file():
        p.error(f"--judge {args.judge}: no such file (a judge's .safetensors)")
    torch.manual_seed(0)
    work = Path(args.work)
    t0 = time.time()
    result = measure(work, Path(args.unet) if args.unet else work / "unet", args.n, args.guidance, args.steps,
                     args.clips, args.free_init, Path(args.judge) if args.judge else None, args.motion_words)
    if args.against:
        try:
            result["against"] = against(result, json.loads(Path(args.against).read_text()))
        except (OSError, ValueError, CdvideoError) as e:
            p.error(f"--against {args.against}: {e}")
    result["seconds"] = round(time.time() - t0)
    emit(result, args.out)


def emit(result: dict, out: str | None) -> None:
    """Print a measurement as JSON, and write it to `out` when given (atomically)."""
    text = json.dumps(result, indent=1)
    print(text)
    if out:
        write_text_atomic(Path(out), text + "\n")
    log(f"measured in {result['seconds']} s")


if __name__ == "__main__":
    main()
