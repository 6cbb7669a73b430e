"""`cdvideo demo`'s settings, apart from the demo's modules so that the command line's parser (`cdvideo --help`,
a mistyped flag) answers without loading torch."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated

from cdvideo.data.ranges import SEED, Range
from cdvideo.toyworld.instances import DEMO_INSTANCE

# Training settings of the miniature world (configs/train/toyworld.yaml holds the same; a test keeps them equal)
# No scale augmentation: the 5 photos already vary position and size, and at 64 px shrinking or zooming them breaks
# the look (a tenth of a photo's pixels hold the pattern). The photos' subject masks weigh the loss (0.1 off the
# subject) at half the maskless recipe's learning rate: +0.04 identity at the same composition
# (docs/toyworld/tuning_masks.md). SPL at 0.1, not the schema's 1: on the four tuning instances, six training seeds
# each, +0.027 identity and +0.029 composition on the stills, the clips alike (docs/toyworld/tuning_spl_weight14.md)
TRAIN = {"resolution": 64, "batch_size": 4, "max_steps": 120, "optimizer.learning_rate": 5e-4,
         "optimizer.scale_lr": False, "augment": False, "unmasked_weight": 0.1, "spl.weight": 0.1,
         "checkpoint_every": 0, "validation.every": 0, "report_to": "none"}
STILL_SEEDS = 2  # render seeds per still prompt: 52 stills per model (eval_set's kinds but motion); --still-seeds


@dataclass
class DemoOptions:
    instance: str = DEMO_INSTANCE
    prompts: list[str] | None = None  # None: default_prompts(instance)
    steps: Annotated[int, Range(1, 100_000)] = TRAIN["max_steps"]
    seeds: list[Annotated[int, SEED]] = field(default_factory=lambda: [0])
    still_seeds: Annotated[int, Range(1, 100)] = STILL_SEEDS  # render seeds per still prompt (26 stills each)
    output_dir: str = "demo"
    without_spl: str = "auto"  # auto (when the time allows), always, never
