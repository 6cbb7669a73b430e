"""Faults a user meets while cdvideo writes: a full disk is one line naming the folder and the free space, and leaves
no partial output; the same command succeeds once the fault is gone."""

import errno
import os
import time

import pytest

from cdvideo.apps.cli import main
from cdvideo.data.files import atomic_path, write_fault


def no_space(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device", str(args[1]) if len(args) > 1 else None)


def test_a_full_disk_during_animate_is_one_line_and_leaves_no_partial_clip(tmp_path, perturbed_weights, capsys,
                                                                         monkeypatch):
    import diffusers.utils

    out = tmp_path / "clips"
    args = ["animate", "--weights", str(perturbed_weights), "--prompt", "a sks dog", "--num-inference-steps", "2",
            "--num-frames", "2", "--height", "64", "--width", "64", "--format", "mp4,gif", "--output-dir", str(out)]
    monkeypatch.setattr(diffusers.utils, "export_to_gif", no_space)  # the GIF fails after the MP4 was written
    assert main(args) == 2
    err = capsys.readouterr().err
    [line] = [x for x in err.splitlines() if "error" in x.lower()]  # the rest is the progress bar
    assert "Traceback" not in err and line.startswith(f"error: cannot write in {out}: the disk is full ("), err
    assert " free)" in line and "choose another folder" in line
    assert sorted(os.listdir(out)) == []  # all or nothing: no MP4 without its GIF and sidecar
    monkeypatch.undo()
    assert main(args) == 0  # the fault gone, the same command writes the whole clip
    assert sorted(p.suffix for p in out.iterdir()) == [".gif", ".json", ".mp4"]


def test_a_failed_write_keeps_the_earlier_file_and_names_what_was_needed(tmp_path):
    path = tmp_path / "weights.safetensors"
    path.write_bytes(b"earlier run")
    with pytest.raises(Exception) as e, atomic_path(path) as tmp:
        tmp.write_bytes(b"x" * 3000)
        raise RuntimeError("Error while serializing: I/O error: No space left on device (os error 28)")
    assert "the disk is full" in str(e.value) and "at least 3 KB needed" in str(e.value)
    assert path.read_bytes() == b"earlier run" and os.listdir(tmp_path) == ["weights.safetensors"]


@pytest.mark.parametrize("code, text", [(errno.EROFS, "read-only"), (errno.EACCES, "no permission"),
                                        (errno.EDQUOT, "quota")])
def test_each_disk_fault_has_its_line(tmp_path, code, text):
    fault = write_fault(OSError(code, os.strerror(code), str(tmp_path / "out" / "a.mp4")))
    assert str(fault).startswith(f"cannot write in {tmp_path / 'out'}: ") and text in str(fault)
    assert write_fault(ValueError("not a disk fault")) is None


def test_a_web_app_job_shows_the_same_line(tmp_path):
    from cdvideo.apps.ui.jobs import JobManager

    mgr = JobManager(tmp_path / "ui")
    job = mgr.submit("tab", "animate", "a clip", lambda j, m: no_space(None, tmp_path / "outputs" / "a.mp4"))
    deadline = time.time() + 30
    while job.active and time.time() < deadline:
        time.sleep(0.05)
    assert job.status == "error" and job.message.startswith(f"cannot write in {tmp_path / 'outputs'}: the disk is full")
