"""Atomic file writes and never-overwrite output names."""

from __future__ import annotations

import contextlib
import errno
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
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds, durably (the file and
    then its folder flushed to the disk: after a power cut `path` holds the old bytes or the new ones, never none).
    A full disk, a read-only one or no permission is the one-line `write_fault`."""
    path = Path(path)
    tmp_path = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.tmp-", suffix=path.suffix, dir=path.parent)
        os.close(fd)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # as a plainly created file, not mkstemp's 0600
        tmp_path = Path(tmp)
        yield tmp_path
        fsync_path(tmp_path)
        os.replace(tmp_path, path)
        fsync_path(path.parent)
    except Exception as e:
        fault = write_fault(e, path.parent, tmp_path.stat().st_size if tmp_path and tmp_path.exists() else 0)
        if fault is None:
            raise
        raise fault from e
    finally:
        if tmp_path is not None and tmp_path.exists():
            tmp_path.unlink()


WRITE_FAULTS = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is used up",
                errno.EROFS: "the disk is read-only", errno.EACCES: "no permission to write there",
                errno.EPERM: "no permission to write there"}


NUMPY_SHORT_WRITE = r"Not enough free space to write|\d+ requested and \d+ written"


def fault_errno(e: BaseException) -> int | None:
    """The errno of a write that failed on the disk (full, over quota, read-only, no permission), from an OSError
    in `e`'s chain or from a library error that names it only in its text (safetensors: '(os error 28)', numpy:
    'Not enough free space')."""
    seen: set[int] = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno in WRITE_FAULTS:
            return e.errno
        found = re.search(r"os error (\d+)", str(e))
        if found and int(found.group(1)) in WRITE_FAULTS:
            return int(found.group(1))
        if isinstance(e, OSError) and e.errno is None and re.search(NUMPY_SHORT_WRITE, str(e)):
            return errno.ENOSPC  # numpy's tofile reports a full disk without an errno
        e = e.__cause__ or e.__context__
    return None


def write_fault(e: BaseException, folder: str | Path | None = None, written: int = 0) -> CdvideoError | None:
    """The one-line error for a write that failed on the disk, naming the folder (else the file `e` names), the free
    space and at least what was needed (`written` bytes before it failed); None for any other error."""
    code = fault_errno(e)
    if code is None:
        return None
    name = getattr(e, "filename", None)
    where = Path(folder) if folder is not None else Path(name).parent if name else Path.cwd()
    if code in (errno.ENOSPC, errno.EDQUOT):
        probe = next((p for p in (where, *where.parents) if p.exists()), Path("/"))
        need = f", at least {_size(written)} needed" if written else ""
        return CdvideoError(f"cannot write in {where}: {WRITE_FAULTS[code]} ({_size(shutil.disk_usage(probe).free)} "
                            f"free{need}); free some space or choose another folder")
    return CdvideoError(f"cannot write in {where}: {WRITE_FAULTS[code]}; choose a folder you can write to")


def _size(n: int) -> str:
    return f"{n / 2**30:.1f} GB" if n >= 2**30 else f"{n / 2**20:.1f} MB" if n >= 2**20 else f"{n / 2**10:.0f} KB"


def fsync_path(path: str | Path) -> None:
    """Flush a file's bytes (or a folder's entries) to the disk, so a rename survives a power cut."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


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
    """Yield a hidden temporary folder beside `path`; move it onto `path` only if the block succeeds, its files
    flushed to the disk first. An existing `path` is replaced (only then) when `replace`, else kept: another writer
    finished it first."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir(parents=True)
        yield tmp
        for file in (p for p in tmp.rglob("*") if p.is_file()):
            fsync_path(file)
        fsync_path(tmp)
        if path.exists() and replace:
            shutil.rmtree(path)
        try:
            os.replace(tmp, path)
        except OSError:
            if replace or not path.is_dir():
                raise
        fsync_path(path.parent)
    except Exception as e:
        fault = write_fault(e, path.parent)
        if fault is None:
            raise
        raise fault from e
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
