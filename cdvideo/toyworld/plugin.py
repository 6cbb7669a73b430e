"""How the miniature world plugs into cdvideo without the core importing it: `base()` registers `model: toyworld`
(entry point group `cdvideo.builtins`) and `JudgeScorer` the world's judge for `cdvideo eval --judge toyworld`
(`cdvideo.scorers`). Plain values and callables only: this package imports nothing from cdvideo's core."""

from __future__ import annotations

from cdvideo.toyworld import MODEL_ID, adapter_dir, controlnet_dir, drift_phrases, judge, model_dir
from cdvideo.toyworld.instances import photos_dir
from cdvideo.toyworld.scoring import asked_in, composition, read_appearance


def base() -> dict:
    return {"name": MODEL_ID, "native_size": 64, "model_dir": model_dir, "adapter_dir": adapter_dir,
            "drift_phrases": drift_phrases, "photos": photos_dir, "controlnet": controlnet_dir,
            "rebuild": "reinstall cdvideo or rebuild it with python -m cdvideo.apps.worldbuild"}


class JudgeScorer:
    """Identity (share of the subject's traits shown) and composition (share of the prompted background, position,
    motion, accessory and second object shown), read by the world's judge."""
    metrics = ("identity", "composition")

    def __init__(self):
        self.judge = judge.load()

    def reference(self, photos: list) -> tuple:
        return read_appearance(self.judge, photos)

    def score(self, frames: list, prompt: str, reference: tuple | None) -> dict[str, float]:
        reading = judge.read(self.judge, frames)
        found = judge.attributes(reading, clip=len(frames) > 1)
        out = {"composition": composition(judge.honoured(found, asked_in(prompt)))}
        if reference is not None:
            out["identity"] = judge.identity(reading, reference)
        return out
