"""Jobs of the web app: run one at a time in one worker thread (a GPU holds one job), each owned by the browser
tab that submitted it, with its state (status, progress, files, one-line error) kept in memory and in
`<root>/jobs/<id>.json`, so a page reload or a server restart finds it again."""

from __future__ import annotations

import atexit
import json
import logging
import queue
import threading
import time
import traceback
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from cdvideo.data.files import write_fault, write_text_atomic
from cdvideo.errors import CdvideoError

log = logging.getLogger(__name__)


class Cancelled(Exception):
    """Raised inside a job's function when its Cancel button was pressed."""


@dataclass
class Job:
    id: str
    owner: str
    kind: str  # train, animate, compose, drift
    title: str
    status: str = "queued"  # queued, running, done, error, cancelled
    progress: dict = field(default_factory=dict)
    message: str = ""
    files: list[str] = field(default_factory=list)
    params: dict = field(default_factory=dict)
    created: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None

    @property
    def active(self) -> bool:
        return self.status in ("queued", "running")


class JobManager:
    """Queue + one dispatcher thread; `submit` returns at once, the page polls `for_owner`.

    Each job runs in a thread of its own that ends with the job. torch's OpenMP runtime (libgomp) keeps a team of
    threads for every thread that has run a parallel region, for as long as that thread lives; once the teams hold
    more threads than there are cores, each team sleeps between parallel regions instead of spinning, and every
    later CPU step of the process runs 2-3x slower (docs/benchmarks.md, "The web app's jobs"). A job's thread takes
    its team with it when it ends; the dispatcher never runs torch."""

    def __init__(self, root: Path):
        self.root = Path(root)
        (self.root / "jobs").mkdir(parents=True, exist_ok=True)
        self.jobs: dict[str, Job] = {}
        self._cancel: set[str] = set()
        self._lock = threading.Lock()
        self._queue: queue.Queue = queue.Queue()
        self._idle = threading.Event()
        self._idle.set()
        for path in sorted((self.root / "jobs").glob("*.json")):
            job = Job(**json.loads(path.read_text()))
            if job.active:  # the server stopped while it ran
                job.status, job.message = "cancelled", "stopped when the server stopped; Resume continues a run"
            self.jobs[job.id] = job
        threading.Thread(target=self._work, daemon=True, name="cdvideo-jobs").start()
        atexit.register(self.shutdown)

    def submit(self, owner: str, kind: str, title: str, fn: Callable[["Job", "JobManager"], list[str]],
               params: dict | None = None) -> Job:
        with self._lock:  # created and queued together: the queue's order is the order of `created`
            job = Job(id=uuid.uuid4().hex[:12], owner=owner, kind=kind, title=title, params=params or {})
            self.jobs[job.id] = job
            self._queue.put((job.id, fn))
        self.save(job)
        return job

    def for_owner(self, owner: str, kind: str | None = None) -> list[Job]:
        with self._lock:
            return sorted((j for j in self.jobs.values() if j.owner == owner and (kind is None or j.kind == kind)),
                          key=lambda j: j.created, reverse=True)

    def cancel(self, job_id: str, owner: str) -> None:
        job = self.jobs.get(job_id)
        if job is None or job.owner != owner:
            return
        with self._lock:
            self._stop(job)

    def check(self, job: Job) -> None:
        """Called by a job between steps: raise Cancelled if its Cancel was pressed."""
        if job.id in self._cancel:
            raise Cancelled

    def cancelled(self, job: Job) -> bool:
        return job.id in self._cancel

    def update(self, job: Job, **progress) -> None:
        job.progress.update(progress)

    def save(self, job: Job) -> None:
        write_text_atomic(self.root / "jobs" / f"{job.id}.json", json.dumps(asdict(job), indent=1))

    def shutdown(self, timeout: float = 60) -> None:
        """Cancel every queued and running job and wait (up to `timeout` s) for the running one to stop at its next
        step, so the server exits with its jobs saved as cancelled (Resume continues a run), never mid-step."""
        with self._lock:
            for job in self.jobs.values():
                self._stop(job, "stopped when the server stopped")
        self._idle.wait(timeout)

    def _stop(self, job: Job, message: str = "") -> None:
        """(Under the lock.) A queued job is cancelled at once; a running one is asked to stop at its next step."""
        if job.status == "queued":
            job.status, job.finished, job.message = "cancelled", time.time(), message
            self.save(job)
        elif job.status == "running":
            self._cancel.add(job.id)

    def _work(self) -> None:
        while True:
            job_id, fn = self._queue.get()
            job = self.jobs[job_id]
            with self._lock:  # shutdown() sees it either queued or running
                if job.status != "queued":
                    continue
                self._idle.clear()
                job.status, job.started = "running", time.time()
            self.save(job)
            runner = threading.Thread(target=self._run, args=(job, fn), daemon=True, name=f"cdvideo-job-{job.id}")
            runner.start()
            runner.join()  # one job at a time

    def _run(self, job: Job, fn: Callable[["Job", "JobManager"], list[str]]) -> None:
        try:
            job.files = [str(p) for p in fn(job, self)]
            job.status = "done"
        except Cancelled:
            job.status = "cancelled"
            job.message = job.message or "cancelled"
        except CdvideoError as e:  # the CLI's one-line message, in the page
            job.status, job.message = "error", str(e)
        except Exception as e:  # a full disk: its one line; a bug: one line in the page, the traceback in the terminal
            fault = write_fault(e)
            if fault is None:
                log.error("job %s failed:\n%s", job.id, traceback.format_exc())
            job.status = "error"
            job.message = str(fault) if fault else \
                f"unexpected {type(e).__name__}: {str(e)[:200]} (details in the terminal)"
        finally:
            job.finished = time.time()
            self._cancel.discard(job.id)
            self.save(job)
            self._idle.set()
