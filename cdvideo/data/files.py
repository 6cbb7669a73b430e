"""Atomic file writes and never-overwrite output names."""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import tempfile
from importlib import resources
from pathlib import Path
from typing import Iterator

from cdvideo.errors import CdvideoError


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


def sha256_file(path: str | Path) -> str:
    """Of a file's bytes; of a folder (a Custom Diffusion folder given as --weights): of its files' names and bytes."""
    h = hashlib.sha256()
    path = Path(path)
    for file in sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]:
        if path.is_dir():
            h.update(str(file.relative_to(path)).encode())
        with open(file, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


@contextlib.contextmanager
def atomic_folder(path: str | Path, replace: bool = True) -> Iterator[Path]:
    """Yield a hidden temporary folder beside `path`; move it onto `path` only if the block succeeds. An existing
    `path` is replaced (only then) when `replace`, else kept: another writer finished it first."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        yield tmp
        if path.exists() and replace:
            shutil.rmtree(path)
        try:
            os.replace(tmp, path)
        except OSError:
            if replace or not path.is_dir():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_text_atomic(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def slug(text: str, max_len: int = 48) -> str:
    """A file-name-safe short form of a prompt."""
    s = re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_").lower()
    return s[:max_len].rstrip("_") or "untitled"


NAME_PUNCTUATION = "-_.+<>[]()'~|"  # allowed in tokens and names besides letters and digits (never / \\ : or ..)
WINDOWS_RESERVED = {"con", "prn", "aux", "nul", *(f"com{i}" for i in range(1, 10)), *(f"lpt{i}" for i in range(1, 10))}


def check_name(value: str, key: str, spaces: bool = False, max_len: int = 64) -> str:
    """`value` if it is safe inside a path (letters, digits, NAME_PUNCTUATION, single spaces when `spaces`; no
    separators, no `..`, no leading dot), else a one-line error naming `key`."""
    allowed = NAME_PUNCTUATION + (" " if spaces else "")
    bad = next((c for c in value if not (c.isalnum() or c in allowed)), None)
    why = (f"{bad!r} is not allowed" if bad is not None else "it starts with a dot" if value.startswith(".")
           else "'..' is not allowed" if ".." in value else "it is empty" if not value.strip()
           else f"it is longer than {max_len} characters" if len(value) > max_len
           else "double or edge spaces" if spaces and (value != value.strip() or "  " in value) else None)
    if why:
        what = "letters, digits" + (", spaces" if spaces else "") + f" and {' '.join(NAME_PUNCTUATION)}"
        raise CdvideoError(f"{key}: {value!r}: {why}; use {what}, e.g. sks")
    return value


def file_stem(name: str) -> str:
    """A file-name stem valid on Windows, macOS and Linux: `<new1>` -> `new1`, `con` -> `con_`."""
    stem = re.sub(r"[^A-Za-z0-9_.+-]+", "_", name).strip("._ ") or "token"
    return f"{stem}_" if stem.lower().split(".")[0] in WINDOWS_RESERVED else stem


def inside(path: str | Path, roots: list[Path], key: str) -> Path:
    """`path` resolved (symlinks followed) if it lies inside one of `roots`, else a one-line error naming `key`."""
    resolved = Path(path).expanduser().resolve()
    if not any(resolved.is_relative_to(r.resolve()) for r in roots):
        raise CdvideoError(f"{key}: {path} is outside the app's folders ({', '.join(str(r) for r in roots)}); "
                           "start the app with --allow-dir to add a folder")
    return resolved


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
