"""Each command that writes, on a disk that is really full: a small tmpfs filled but for a few KB (mounted when the
tests run as root; elsewhere each flush to the disk raises ENOSPC instead). One line naming the folder and the free
space, no traceback, nothing left under a final name; once space is freed, the same command succeeds."""

import errno
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import tiny_overrides

from cdvideo.apps.cli import main
from cdvideo.data import files


class FullDisk:
    """A folder on a disk with `room` bytes free until `free()`."""

    def __init__(self, root: Path, room: int = 4096):  # one page: the first small file takes it
        self.folder, self.patch = root / "disk", pytest.MonkeyPatch()
        self.folder.mkdir()
        self.mounted = os.geteuid() == 0 and subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=32m", "tmpfs", str(self.folder)], capture_output=True).returncode == 0
        if self.mounted:
            filler = self.folder / ".filler"
            with open(filler, "wb") as f:
                os.posix_fallocate(f.fileno(), 0, os.statvfs(self.folder).f_bavail * os.statvfs(self.folder).f_frsize
                                   - room)
        else:
            self.patch.setattr(files, "fsync_path", self._no_space)

    @staticmethod
    def _no_space(path):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    def entries(self) -> list[str]:
        return sorted(str(p.relative_to(self.folder)) for p in self.folder.rglob("*") if p.name != ".filler")

    def free(self) -> None:
        if self.mounted:
            (self.folder / ".filler").unlink()
        else:
            self.patch.undo()

    def unmount(self) -> None:
        self.patch.undo()
        if self.mounted:
            subprocess.run(["umount", "-l", str(self.folder)], check=False)


@pytest.fixture
def disk(tmp_path):
    d = FullDisk(tmp_path)
    yield d
    d.unmount()


def check_fault(code: int, err: str, folder: Path) -> None:
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2 and "Traceback" not in err and len(lines) == 1, err
    assert lines[0].startswith(f"error: cannot write in {folder}") and "the disk is full (" in lines[0], lines[0]
    assert " free" in lines[0] and "free some space or choose another folder" in lines[0]


def commands(disk: Path, weights: Path, dog_dir: Path, tmp_path: Path) -> dict:
    """Each command's arguments writing into `disk`, and the folder its error names."""
    render = ["--weights", str(weights), "--prompt", "a sks dog", "--num-inference-steps", "2", "--height", "64",
              "--width", "64"]
    other = tmp_path / "other.safetensors"
    other.write_bytes(weights.read_bytes())
    return {
        "train": (["train", *tiny_overrides(disk / "run", dog_dir, "max_steps=1")], disk / "run"),
        "animate": (["animate", *render, "--num-frames", "2", "--format", "mp4,gif", "--output-dir", str(disk)], disk),
        "sample": (["sample", *render, "--num-images-per-prompt", "2", "--output-dir", str(disk)], disk),
        "export": (["export", str(weights), "--format", "lora", "--rank", "4", "-o", str(disk / "lora.safetensors")],
                   disk),
        "compose": (["compose", str(weights), str(other), "--rename", "other:sks=zwx", "-o",
                     str(disk / "both.safetensors")], disk),
        "drift": (["drift", "--weights", str(weights), "-o", str(disk / "drift")], disk),
    }


@pytest.mark.parametrize("command", ["train", "animate", "sample", "export", "compose", "drift"])
def test_a_full_disk_is_one_line_leaves_nothing_and_the_rerun_succeeds(command, disk, perturbed_weights, dog_dir,
                                                                        tmp_path, capsys):
    args, folder = commands(disk.folder, perturbed_weights, dog_dir, tmp_path)[command]
    check_fault(main(args), capsys.readouterr().err, folder)
    left = disk.entries()
    assert not [name for name in left if ".tmp-" in name or name.endswith((".safetensors", ".mp4", ".gif", ".png",
                                                                             ".json", ".csv"))], left
    disk.free()
    assert main(args) == 0, capsys.readouterr().err


def test_a_full_disk_in_the_worlds_build_is_one_line(disk, monkeypatch, capsys):
    """`python -m cdvideo.apps.worldbuild --stage judge`, its work folder on the full disk (the judge's plan made
    small, as tests/test_worldbuild.py makes it); with space freed, the stage runs to its record."""
    from dataclasses import replace

    from test_worldbuild import SMALL

    from cdvideo.apps.worldbuild import __main__ as build

    plans = replace(build.plans_for(), judge=SMALL)
    monkeypatch.setattr(build, "plans_for", lambda *args: plans)
    monkeypatch.setattr(sys, "argv", ["worldbuild", "--stage", "judge", "--work", str(disk.folder / "work")])
    with pytest.raises(SystemExit) as exit_:
        build.main()
    check_fault(exit_.value.code, capsys.readouterr().err, disk.folder / "work")
    assert not [n for n in disk.entries() if n.endswith((".safetensors", ".done", ".npy"))], disk.entries()
    disk.free()
    build.main()
    assert (disk.folder / "work" / "judge.done").is_file()
