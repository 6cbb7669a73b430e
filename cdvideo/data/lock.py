"""One writer per run folder: a lock file holding the writer's PID, host and start time.

A second process refuses in one line naming the first's PID. The lock is the operating system's (`flock`): it goes
with the process that holds it, so a lock file left by a killed process is taken over, with a warning naming it.
Where `fcntl` is missing (Windows) the file alone is the lock, created exclusively; one left by a process that no
longer runs on this host is taken over the same way.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import socket
import time
from collections.abc import Iterator
from pathlib import Path

from cdvideo.data.files import write_fault
from cdvideo.errors import CdvideoError

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None

log = logging.getLogger(__name__)
LOCK_NAME = ".cdvideo.lock"


@contextlib.contextmanager
def run_lock(folder: str | Path, what: str = "output_dir") -> Iterator[Path]:
    """Hold `folder`'s lock (creating the folder) while the body writes it; `what` names the setting in errors."""
    folder = Path(folder)
    made = [p for p in (folder, *folder.parents) if not p.exists()]  # innermost first
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd = _acquire(folder / LOCK_NAME, what)
        remove_leftovers(folder)
    except OSError as e:
        raise write_fault(e, folder) or CdvideoError(f"{what} {folder}: cannot lock it ({e.strerror})") from None
    try:
        yield folder / LOCK_NAME
    finally:
        with contextlib.suppress(OSError):
            os.unlink(folder / LOCK_NAME)  # before the lock goes: a waiting process then finds no file to lock
        os.close(fd)
        try:  # a run refused by its checks leaves no empty folders behind
            for p in made:
                p.rmdir()
        except OSError:
            pass


def remove_leftovers(folder: Path) -> None:
    """The temporaries a killed writer left (`.NAME.tmp-*` of `atomic_path` and `atomic_folder`) in `folder` and its
    subfolders (checkpoints/): safe to remove only while holding the folder's lock."""
    for tmp in [*folder.glob(".*.tmp-*"), *folder.glob("*/.*.tmp-*")]:
        if tmp.is_dir():
            shutil.rmtree(tmp)
        else:
            tmp.unlink()
        log.info("removed %s, left by a writer that was stopped", tmp)


def main_rank() -> bool:
    """Whether this process writes the run folder: the only one, or rank 0 of a launched run (torchrun,
    accelerate launch)."""
    return os.environ.get("RANK", "0") == "0"


def _acquire(path: Path, what: str) -> int:
    """The open, locked, stamped lock file's descriptor."""
    for _ in range(5):  # another process may remove the file between our open and our lock: open it again
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644) if fcntl else _create(path, what)
        if fd is None:
            continue
        if fcntl:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read(fd)
                os.close(fd)
                raise CdvideoError(_refusal(path.parent, holder, what)) from None
            if not path.exists() or os.fstat(fd).st_ino != os.stat(path).st_ino:
                os.close(fd)  # the file we locked was removed by the writer that just finished
                continue
        left = _read(fd)
        if left:
            log.warning("%s: took over the lock left by %s, which is no longer running", path.parent, _who(left))
        _stamp(fd)
        return fd
    raise CdvideoError(f"{what} {path.parent}: could not take its lock ({path.name}); try again")


def _create(path: Path, what: str) -> int | None:
    """Without `fcntl`: the lock file created exclusively, after removing one whose process is gone (None: retry)."""
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        pass
    holder = json.loads(path.read_text() or "{}") if path.exists() else {}
    if holder.get("host") == socket.gethostname() and not _alive(holder.get("pid", 0)):
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        log.warning("%s: removed the lock left by %s, which is no longer running", path.parent, _who(holder))
        return None
    raise CdvideoError(_refusal(path.parent, holder, what))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # another user's process
    return True


def _read(fd: int) -> dict:
    os.lseek(fd, 0, os.SEEK_SET)
    text = os.read(fd, 4096).decode("utf-8", "replace")
    try:
        return json.loads(text) if text.strip() else {}
    except json.JSONDecodeError:
        return {"pid": "?", "host": "?"}


def _stamp(fd: int) -> None:
    """Write this process's PID, host and start time into the locked file."""
    record = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    os.write(fd, json.dumps(record).encode())
    os.fsync(fd)


def _who(holder: dict) -> str:
    return f"process {holder.get('pid', '?')} on {holder.get('host', '?')}"


def _refusal(folder: Path, holder: dict, what: str) -> str:
    since = f" since {holder['started']}" if holder.get("started") else ""
    return (f"{what} {folder} is being written by {_who(holder)}{since}; wait for it to finish, stop it, or choose "
            f"another {what}")
