"""Atomic file writes and never-overwrite output names."""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from importlib import resources
from pathlib import Path
from typing import Iterator


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.tmp-", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # as a plainly created file, not mkstemp's 0600
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_text_atomic(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def slug(text: str, max_len: int = 48) -> str:
    """A file-name-safe short form of a prompt."""
    s = re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_").lower()
    return s[:max_len].rstrip("_") or "untitled"


def reserve_stem(folder: Path, stem: str, suffixes: tuple[str, ...], claim: str = ".json") -> str:
    """`stem`, or `stem-2`, `stem-3`... so that no `stem+suffix` in `folder` exists, taken atomically: `stem+claim`
    is created with O_EXCL, so two processes writing the same prompt and seed into one folder never pick the same
    name. The caller writes `stem+claim` last (an atomic replace of the empty placeholder), or removes it on
    failure."""
    folder.mkdir(parents=True, exist_ok=True)
    candidate, n = stem, 1
    while True:
        if not any((folder / f"{candidate}{s}").exists() for s in suffixes):
            try:
                os.close(os.open(folder / f"{candidate}{claim}", os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
                return candidate
            except FileExistsError:
                pass  # another writer claimed it between the check and the create
        n += 1
        candidate = f"{stem}-{n}"


def text_lines(text: str) -> list[str]:
    """The non-empty lines of a list file, stripped, without `#` comment lines."""
    return [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def asset_text(name: str) -> str:
    """A data file bundled in `cdvideo/assets/`."""
    return (resources.files("cdvideo") / "assets" / name).read_text()
