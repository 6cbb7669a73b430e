"""Step timing for benchmarks: wall time per named section of a training step. Off by default (`NO_TIMER`); a
real timer synchronises CUDA at every boundary, so only benchmarks should pass one."""

from __future__ import annotations

import contextlib
import time
from collections import defaultdict
from typing import Iterator

import torch


class StepTimer:
    """Accumulates seconds per section over the steps it sees; `split()` gives the mean per step."""

    def __init__(self, device: torch.device | str = "cpu"):
        self.cuda = torch.device(device).type == "cuda"
        self.totals: dict[str, float] = defaultdict(float)
        self.steps = 0
        self._grad_mark: float | None = None

    def _now(self) -> float:
        if self.cuda:
            torch.cuda.synchronize()
        return time.perf_counter()

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        t0 = self._now()
        yield
        self.totals[name] += self._now() - t0

    def mark_backward(self, tensor: torch.Tensor, name: str) -> None:
        """Time the part of the next backward pass that runs after `tensor`'s gradient is ready (for the text
        encoder's share of one backward through UNet and text encoder)."""
        if tensor.requires_grad:
            tensor.register_hook(lambda g: setattr(self, "_grad_mark", self._now()) or g)
            self._grad_name = name

    @contextlib.contextmanager
    def backward(self, name: str) -> Iterator[None]:
        """Time a backward pass, splitting off the part after a `mark_backward` tensor's gradient."""
        self._grad_mark = None
        t0 = self._now()
        yield
        t1 = self._now()
        if self._grad_mark is not None:
            self.totals[name] += self._grad_mark - t0
            self.totals[self._grad_name] += t1 - self._grad_mark
        else:
            self.totals[name] += t1 - t0

    @contextlib.contextmanager
    def pipeline(self) -> Iterator:
        """Time one diffusers pipeline call given the yielded `callback_on_step_end`: text encoding (before the
        first step, less one step's time), denoising, and VAE decoding (after the last step)."""
        stamps: list[float] = []

        def callback(pipe, i, t, kwargs):
            stamps.append(self._now())
            return kwargs

        t0 = self._now()
        yield callback
        t1 = self._now()
        if stamps:
            per = (stamps[-1] - stamps[0]) / (len(stamps) - 1) if len(stamps) > 1 else (stamps[0] - t0) / 2
            text = max(stamps[0] - t0 - per, 0.0)
            self.totals["text"] += text
            self.totals["denoise"] += stamps[-1] - t0 - text
            self.totals["vae_decode"] += t1 - stamps[-1]

    def step_done(self) -> None:
        self.steps += 1

    def split(self) -> dict[str, float]:
        """Mean seconds per step of each section."""
        return {k: v / max(self.steps, 1) for k, v in self.totals.items()}

    def reset(self) -> None:
        self.totals.clear()
        self.steps = 0


class _NoTimer:
    """The default: no synchronisation, no bookkeeping."""

    def __call__(self, name: str):
        return contextlib.nullcontext()

    def backward(self, name: str):
        return contextlib.nullcontext()

    def mark_backward(self, tensor: torch.Tensor, name: str) -> None:
        pass

    def pipeline(self):
        return contextlib.nullcontext(None)

    def step_done(self) -> None:
        pass


NO_TIMER = _NoTimer()
