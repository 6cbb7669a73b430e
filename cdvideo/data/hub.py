"""Files of a Hugging Face hub repository, from the local cache or from the network where there is one; offline or
missing, a one-line error naming what was asked for and what to do."""

from __future__ import annotations

from pathlib import Path

from cdvideo.errors import CdvideoError, first_line


def download(repo: str, what: str, patterns: list[str], command: str | None = None) -> Path:
    """The local snapshot folder of `repo` holding its files that match `patterns` (globs inside the repo);
    `command`: how to fetch them elsewhere, for the error (default: the whole repository)."""
    from huggingface_hub import snapshot_download  # lazy: start-up time

    try:
        return Path(snapshot_download(repo, allow_patterns=patterns))
    except Exception as e:  # the hub client raises many types (offline, missing repo, gated): all one to the user
        raise CdvideoError(f"{what}: not a local file and not downloadable ({first_line(e, 100)}); download it once "
                           f"elsewhere (`{command or f'hf download {repo}'}`) and pass the local path") from None


def download_file(repo: str, file: str, what: str, also: tuple[str, ...] = ()) -> Path:
    """One file of `repo` (and the files matching the globs in `also`, beside it in the snapshot)."""
    command = f"hf download {repo} " + (" ".join(["--include", file, *(f"'{p}'" for p in also)]) if also else file)
    path = download(repo, what, [file, *also], command) / file
    if not path.is_file():  # offline, a cached snapshot may lack it; online, the repository has no such file
        raise CdvideoError(f"{what}: {file} is not in {repo} as downloaded here; download it (`{command}`) and pass "
                           "the local path")
    return path
