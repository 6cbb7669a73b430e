"""Does the world's mask ControlNet place the object where its mask is, and keep it itself? On stills:

    python -m cdvideo.apps.worldbuild.control_study          # ~2 minutes on 2 cores

For each personal instance, spelled out in words without a position ("a big yellow ball with purple stripes on a
gray background"), 10 masks of its own shape (5 positions x 2 sizes, backgrounds cycling) condition the build's
image model through diffusers' StableDiffusionControlNetPipeline; the same prompts and seeds render without it.
The judge reads where the object is (its centre regression, in px, against the mask's object) and the instance's
identity. Prints one JSON object (and writes it to --out when given).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from cdvideo.apps.worldbuild.drawing import components
from cdvideo.data.files import write_text_atomic
from cdvideo.data.ranges import Parser
from cdvideo.toyworld import draw, world
from cdvideo.toyworld import judge as J
from cdvideo.toyworld.instances import INSTANCES
from cdvideo.toyworld.world import POSITIONS, SIZES, backgrounds_for


def masked_scenes(inst) -> list[world.Scene]:
    """The instance at each position and size, backgrounds cycling: the scenes whose masks condition."""
    bgs = backgrounds_for(inst.colour)
    layout = [(p, s) for p in POSITIONS for s in SIZES]
    return [inst.scene(bgs[i % len(bgs)], p, s, seed=i) for i, (p, s) in enumerate(layout)]


def centre_error(reading: J.Reading, scene: world.Scene) -> float:
    """Distance in px between the centre the judge reads and the scene's object centre."""
    truth = world.geometry(scene, 1)[0, :2]
    return float(np.linalg.norm(reading.regression[0, :2].numpy() * 64 - truth))


@torch.no_grad()
def measure(work: Path, guidance: float = 5.0, steps: int = 25) -> dict:
    from diffusers import ControlNetModel, StableDiffusionControlNetPipeline  # lazy: start-up time

    from cdvideo.pipelines.build import image_pipeline  # lazy: start-up time

    parts = components(work, work / "unet")
    plain = image_pipeline(parts)
    controlled = StableDiffusionControlNetPipeline(
        **{k: plain.components[k] for k in ("vae", "text_encoder", "tokenizer", "unet", "scheduler")},
        controlnet=ControlNetModel.from_pretrained(str(work / "controlnet_mask")), safety_checker=None,
        feature_extractor=None, requires_safety_checker=False)
    judge = J.load(work / "judge.safetensors")
    out: dict = {}
    for name, inst in INSTANCES.items():
        scenes = masked_scenes(inst)
        prompts = [f"a big {inst.describe()} on a {s.background} background" for s in scenes]
        row, control = {}, {"image": [draw.masks(s)[0] for s in scenes]}
        for arm, pipe, extra in (("without", plain, {}), ("with", controlled, control)):
            pipe.set_progress_bar_config(disable=True)
            gens = [torch.Generator().manual_seed(i) for i in range(len(scenes))]
            images = pipe(prompts, num_inference_steps=steps, guidance_scale=guidance, generator=gens,
                          output_type="np", **extra).images
            readings = [J.read(judge, (np.asarray(im)[None] * 255).round().astype(np.uint8)) for im in images]
            errors = [centre_error(r, s) for r, s in zip(readings, scenes)]
            row[arm] = {"centre_error_px": round(float(np.mean(errors)), 2),
                        "identity": round(float(np.mean([J.identity(r, inst.appearance) for r in readings])), 3)}
        out[name] = row
    out["mean"] = {arm: {k: round(float(np.mean([out[n][arm][k] for n in INSTANCES])), 3)
                         for k in ("centre_error_px", "identity")} for arm in ("without", "with")}
    return out


def main() -> None:
    p = Parser(prog="python -m cdvideo.apps.worldbuild.control_study", description=__doc__.splitlines()[0])
    p.add_argument("--work", default="toyworld-build", help="the build folder (default: %(default)s)")
    p.add_argument("--out", default=None, help="also write the JSON here")
    args = p.parse_args()
    result = measure(Path(args.work))
    text = json.dumps(result, indent=1)
    print(text)
    if args.out:
        write_text_atomic(Path(args.out), text + "\n")


if __name__ == "__main__":
    main()
