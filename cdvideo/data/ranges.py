"""Valid intervals of numeric settings, declared once beside each schema field (`Annotated[int, Range(1, 240)]`) or
command-line flag (`type=Flag.of(schema, key)` or `Flag(int, Range(1, 65535))`), and checked where a value enters:
config files, `key=value` overrides, prompt files, sidecars, the web app's forms and the flags."""

from __future__ import annotations

import argparse
import math
import typing
from dataclasses import dataclass
from typing import Any, Optional

from cdvideo.errors import CdvideoError


class OutOfRange(CdvideoError):
    """A number of the right type outside its key's Range."""


@dataclass(frozen=True)
class Range:
    """A closed interval, either end open-ended (None) or excluded (`above`: a learning rate above 0; `below`: Adam's
    beta below 1)."""
    low: Optional[float] = None
    high: Optional[float] = None
    above: bool = False
    below: bool = False

    def holds(self, value: float) -> bool:
        """Whether a finite `value` lies inside."""
        if isinstance(value, float) and not math.isfinite(value):  # an int of any size compares exactly
            return False
        if self.low is not None and (value <= self.low if self.above else value < self.low):
            return False
        return self.high is None or (value < self.high if self.below else value <= self.high)

    def __str__(self) -> str:
        low = None if self.low is None else f"{'above' if self.above else 'at least'} {_num(self.low)}"
        high = None if self.high is None else f"{'below' if self.below else 'at most'} {_num(self.high)}"
        if low and high and not (self.above or self.below):
            return f"{_num(self.low)} to {_num(self.high)}"
        return "a value " + " and ".join(s for s in (low, high) if s) if low or high else "any finite number"

    def check(self, value: float, name: str) -> None:
        """Raise a one-line error naming `name` and the range unless `value` lies inside."""
        if not self.holds(value):
            raise OutOfRange(f"{name}: {value!r} is out of range; give {self}")


def _num(x: float) -> str:
    return f"{x:g}" if isinstance(x, float) and not float(x).is_integer() else f"{int(x):_}".replace("_", ",")


# Shared intervals: each names what its bound protects.
SEED = Range(0, 2**32 - 1)  # numpy's and torch's seeds, as every other tool takes them
STEPS = Range(1, 10_000_000)  # a count of optimizer steps
EVERY = Range(0, 10_000_000)  # steps between events; 0 turns the event off
INFERENCE_STEPS = Range(1, 1000)  # the schedulers' 1,000 training timesteps
GUIDANCE = Range(0, 100)  # classifier-free guidance scale (at most 1: no guidance)
LEARNING_RATE = Range(0, 1, above=True)
LOSS_WEIGHT = Range(0, 100)
WEIGHT_DECAY = Range(0, 1)  # AdamW's decoupled decay per unit learning rate
GRAD_NORM = Range(0, 1e6, above=True)  # the clipping norm
KEPT_CHECKPOINTS = Range(1, 10_000)  # checkpoints_total_limit (null keeps all)
SIZE = Range(64, 4096)  # pixels; multiples of 8 are checked beside
BATCH = Range(1, 1024)
CLIP_FPS = Range(1, 240)
COUNT = Range(1, 1000)  # renders or repeats of a study


def range_of(tp: Any) -> Optional[Range]:
    """The Range in an `Annotated[...]` type, or None."""
    return next((m for m in typing.get_args(tp)[1:] if isinstance(m, Range)), None) \
        if typing.get_origin(tp) is typing.Annotated else None


def field_range(schema: type, key: str) -> tuple[type, Range]:
    """The number type and Range of dataclass `schema`'s field `key` (also inside Optional, list or tuple)."""
    found = _annotated(typing.get_type_hints(schema, include_extras=True)[key])
    if found is None:
        raise TypeError(f"{schema.__name__}.{key} declares no Range")
    return found


def _annotated(tp: Any) -> Optional[tuple[type, Range]]:
    if range_of(tp) is not None:
        return typing.get_args(tp)[0], range_of(tp)
    return next(filter(None, map(_annotated, typing.get_args(tp))), None)


class Parser(argparse.ArgumentParser):
    """argparse's parser with a one-line error: the flag, what is wrong, and where help is (not the usage block)."""

    def error(self, message: str):
        self.exit(2, f"error: {self.prog}: {message} (see {self.prog} --help)\n")


@dataclass(frozen=True)
class Flag:
    """An argparse `type=` that reads `kind` and checks `valid`; argparse names the flag in its one-line error."""
    kind: type
    valid: Range

    @property
    def __name__(self) -> str:  # argparse's fallback message names the type
        return self.kind.__name__

    @classmethod
    def of(cls, schema: type, key: str) -> Flag:
        """The flag of a schema field: its type and Range, declared once in the schema."""
        return cls(*field_range(schema, key))

    def __call__(self, text: str) -> Any:
        try:
            value = self.kind(text)
        except ValueError:
            what = "an integer" if self.kind is int else "a number"
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}; give {self.valid}") from None
        if not self.valid.holds(value):
            raise argparse.ArgumentTypeError(f"{text} is out of range; give {self.valid}")
        return value
