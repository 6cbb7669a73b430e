"""What a build's image model draws when told, read by the build's judge:

    python -m cdvideo.apps.worldbuild.drawing                        # toyworld-build/unet, ~2 minutes
    python -m cdvideo.apps.worldbuild.drawing --unet toyworld-build/unet.round

- the spelled-out identity of each personal instance ("a yellow ball with purple stripes on a gray background"):
  the ceiling of any personalization of it, since a tuned token can at best say what these words say; and each
  trait's share of it (class, colour, pattern, pattern colour);
- the accessory (kind and colour) and the companion (class, colour, side) on prompts that ask for them;
- class, colour, background and position on the world's fixed image prompts.
Prints one JSON object (and writes it to --out when given).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch

from cdvideo.apps.worldbuild.common import SD_SCHEDULE, log
from cdvideo.data.files import write_text_atomic
from cdvideo.data.ranges import Flag, Parser, Range
from cdvideo.models.architectures import tokenizer_dir
from cdvideo.toyworld import scoring
from cdvideo.toyworld import judge as J
from cdvideo.toyworld.instances import INSTANCES


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


def measure(work: Path, unet: Path, n: int = 16, guidance: float = 5.0, steps: int = 25) -> dict:
    """Spelled-out identity per instance, and the rates of the asked attributes per prompt set."""
    from cdvideo.pipelines.build import image_pipeline  # lazy: start-up time

    judge = J.load(work / "judge.safetensors")
    pipe = image_pipeline(components(work, unet))
    pipe.set_progress_bar_config(disable=True)
    out: dict = {"unet": str(unet), "guidance": guidance, "steps": steps, "spelled_out": {}, "spelled_out_traits": {}}
    for name, inst in INSTANCES.items():
        prompts = scoring.spelled_prompts(inst, n)
        readings = [J.read(judge, frames) for frames in draw(pipe, prompts, guidance, steps)]
        out["spelled_out"][name] = round(float(np.mean([J.identity(r, inst.appearance) for r in readings])), 4)
        traits = {t: np.mean([J.identity(r, inst.appearance, (t,)) for r in readings]) for t in J.TRAITS}
        out["spelled_out_traits"][name] = {t: round(float(v), 4) for t, v in traits.items()}  # which trait fails
    for kind, prompts in (("accessory", scoring.accessory_prompts(24)), ("companion", scoring.companion_prompts(24)),
                          ("image", scoring.image_prompts(48))):
        out[kind] = {k: round(v, 4) for k, v in scoring.score(judge, draw(pipe, prompts, guidance, steps),
                                                              prompts).honoured.items()}
    return out


def main() -> None:
    p = Parser(prog="python -m cdvideo.apps.worldbuild.drawing", description=__doc__.splitlines()[0])
    p.add_argument("--work", default="toyworld-build", help="the build folder (default: %(default)s)")
    p.add_argument("--unet", default=None, help="a UNet folder (default: WORK/unet)")
    p.add_argument("--n", type=Flag(int, Range(1, 1000)), default=16, help="images per instance (default: 16)")
    p.add_argument("--guidance", type=Flag(float, Range(1, 30)), default=5.0)
    p.add_argument("--out", default=None, help="also write the JSON here")
    args = p.parse_args()
    torch.manual_seed(0)
    work = Path(args.work)
    t0 = time.time()
    result = measure(work, Path(args.unet) if args.unet else work / "unet", args.n, args.guidance)
    result["seconds"] = round(time.time() - t0)
    text = json.dumps(result, indent=1)
    print(text)
    if args.out:
        write_text_atomic(Path(args.out), text + "\n")
    log(f"measured in {result['seconds']} s")


if __name__ == "__main__":
    main()
