"""Files of a Hugging Face hub repository, from the local cache or from the network where there is one; offline or
missing, a one-line error naming what was asked for and what to do."""

from __future__ import annotations

from pathlib import Path

from cdvideo.errors import CdvideoError, first_line


def download(repo: str, what: str, patterns: list[str]) -> Path:
    """The local snapshot folder of `repo` holding its files that match `patterns` (globs inside the repo)."""
    from huggingface_hub import snapshot_download  # lazy: start-up time

    try:
        return Path(snapshot_download(repo, allow_patterns=patterns))
    except Exception as e:  # the hub client raises many types (offline, missing repo, gated): all one to the user
        raise CdvideoError(f"{what}: not a local file and not downloadable ({first_line(e, 100)}); download it once "
                           f"elsewhere (`hf download {repo}`) and pass the local path") from None


def download_file(repo: str, file: str, what: str, also: tuple[str, ...] = ()) -> Path:
    """One file of `repo` (and the files matching the globs in `also`, beside it in the snapshot)."""
    path = download(repo, what, [file, *also]) / file
    if not path.is_file():
        raise CdvideoError(f"{what}: the hub repository {repo} has no file {file}")
    return path
