"""Full training state on disk: trainable tensors, optimizer, LR schedule, RNG states, step."""

from __future__ import annotations

import logging
import random
import shutil
from pathlib import Path

import torch

from cdvideo.data.files import atomic_folder
from cdvideo.errors import CdvideoError

log = logging.getLogger(__name__)
STATE_FILE = "state.pt"


def checkpoint_dir(output_dir: str | Path, step: int) -> Path:
    return Path(output_dir) / "checkpoints" / f"step_{step:06d}"


def list_checkpoints(output_dir: str | Path) -> list[Path]:
    """Complete checkpoints, oldest first."""
    root = Path(output_dir) / "checkpoints"
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.name.startswith("step_") and (p / STATE_FILE).is_file()]
    return sorted(found, key=lambda p: int(p.name.split("_")[1]))


def resolve_resume(output_dir: str | Path, resume: str) -> Path:
    """The checkpoint folder meant by `resume` ("latest" or a folder)."""
    if resume != "latest":
        path = Path(resume)
        if not (path / STATE_FILE).is_file():
            raise CdvideoError(f"resume: {path} holds no {STATE_FILE}; give a folder under <output_dir>/checkpoints")
        return path
    found = list_checkpoints(output_dir)
    if not found:
        raise CdvideoError(f"resume=latest: no checkpoint in {Path(output_dir) / 'checkpoints'}; "
                           "drop `resume` to start a new run")
    return found[-1]


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save(output_dir: str | Path, step: int, state: dict, keep: int | None = None) -> Path:
    """Write `state` into checkpoints/step_N atomically (temporary folder, then rename); prune old ones."""
    final = checkpoint_dir(output_dir, step)
    with atomic_folder(final) as tmp:
        torch.save({**state, "step": step, "rng": rng_state()}, tmp / STATE_FILE)
    if keep:
        for old in list_checkpoints(output_dir)[:-keep]:
            shutil.rmtree(old)
    return final


def load(folder: str | Path) -> dict:
    return torch.load(Path(folder) / STATE_FILE, map_location="cpu", weights_only=True)


def check_run_folder(out: str | Path, owned: tuple[str, ...], finished: str, resume: str | None,
                     overwrite: bool) -> None:
    """Refuse to overwrite an earlier run in `out` unless `overwrite`, or `resume` continues it (and its `finished`
    file is not there yet). A run that stopped before its first checkpoint (a fault, a crash) saved nothing to keep:
    its files (`owned`) make way for the new run."""
    out = Path(out)
    if resume:
        if (out / finished).exists() and not overwrite:
            raise CdvideoError(f"{out / finished} exists: this run already finished; set overwrite=true to redo it")
        resolve_resume(out, resume)
        return
    taken = [name for name in owned if (out / name).exists()]
    if taken and not overwrite and ((out / finished).exists() or list_checkpoints(out)):
        raise CdvideoError(f"output_dir {out} already holds a run ({', '.join(taken)}); continue it with "
                           "resume=latest, choose another output_dir, or set overwrite=true")


def reset_run_folder(out: str | Path, owned: tuple[str, ...], resume: str | None, overwrite: bool) -> None:
    """Create the output folder; unless resuming, remove an earlier run's `owned` files (`check_run_folder` let
    only an `overwrite` or a run that saved nothing through)."""
    out = Path(out)
    if not resume:
        left = [name for name in owned if (out / name).exists()]
        if left and not overwrite:
            log.warning("output_dir %s: the run there stopped before its first checkpoint; starting again", out)
        for name in left:
            path = out / name
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()
    out.mkdir(parents=True, exist_ok=True)
