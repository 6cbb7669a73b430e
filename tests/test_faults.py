"""Faults a user meets while cdvideo writes: a full disk is one line naming the folder and the free space, and leaves
no partial output; a second writer into a run folder refuses; a run killed mid-write resumes; the same command
succeeds once the fault is gone."""

import errno
import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import tiny_overrides

from cdvideo.apps.cli import main
from cdvideo.data.files import atomic_path, write_fault


def wait_for(done, timeout=60):
    deadline = time.time() + timeout
    while not done() and time.time() < deadline:
        time.sleep(0.05)
    assert done()


def no_space(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device", str(args[1]) if len(args) > 1 else None)


def test_a_full_disk_during_animate_is_one_line_and_leaves_no_partial_clip(tmp_path, perturbed_weights, capsys,
                                                                         monkeypatch):
    from cdvideo.data import clips

    out = tmp_path / "clips"
    args = ["animate", "--weights", str(perturbed_weights), "--prompt", "a sks dog", "--num-inference-steps", "2",
            "--num-frames", "2", "--height", "64", "--width", "64", "--format", "mp4,gif", "--output-dir", str(out)]
    monkeypatch.setattr(clips, "write_gif", no_space)  # the GIF fails after the MP4 was written
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
    wait_for(lambda: not job.active)
    assert job.status == "error" and job.message.startswith(f"cannot write in {tmp_path / 'outputs'}: the disk is full")


HOLD = """
import sys, time
from cdvideo.data.lock import run_lock
with run_lock(sys.argv[1]):
    print("locked", flush=True)
    time.sleep(600)
"""


def test_one_writer_per_run_folder_and_a_killed_writers_lock_is_taken_over(tmp_path, dog_dir, capsys, caplog):
    """While another process writes a run folder, `train`, `train-motion` and a web-app Train job into it refuse in
    one line naming its PID and write nothing; once it is killed (its lock file left behind), the run takes the
    lock over, says so, and succeeds."""
    from cdvideo.apps.ui.jobs import JobManager
    from cdvideo.data.config import load_train_config
    from cdvideo.tasks.train import train

    out = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        refusal = f"output_dir {out} is being written by process {holder.pid} on "
        args = ["train", *tiny_overrides(out, dog_dir, "max_steps=1")]
        for command in (args, ["train-motion", f"output_dir={out}", f"references=[{dog_dir}]", "prompt=a dog"]):
            assert main(command) == 2
            [line] = capsys.readouterr().err.strip().splitlines()
            assert line.startswith(f"error: {refusal}") and "choose another output_dir" in line, line
        job = JobManager(tmp_path / "ui").submit(
            "tab", "train", "a run", lambda j, m: train(load_train_config(None, args[1:])))
        wait_for(lambda: not job.active)
        assert job.status == "error" and job.message.startswith(refusal)
        assert os.listdir(out) == [".cdvideo.lock"]  # the refused runs wrote nothing
    finally:
        holder.kill()  # SIGKILL: no clean-up, its lock file stays
        holder.wait()
    assert (out / ".cdvideo.lock").exists()
    assert main(args) == 0
    assert f"took over the lock left by process {holder.pid} on " in caplog.text
    assert (out / "weights.safetensors").is_file() and not (out / ".cdvideo.lock").exists()


KILL_BEFORE_RENAME = """
import os, signal, sys
from cdvideo.apps.cli import main

rename = os.replace


def replace(src, dst):
    if os.path.basename(dst) == "step_000004":  # its files written and flushed; the rename never happens
        os.kill(os.getpid(), signal.SIGKILL)
    return rename(src, dst)


os.replace = replace
sys.exit(main(sys.argv[1:]))
"""


def test_a_run_killed_between_a_checkpoints_write_and_its_rename_resumes(tmp_path, dog_dir, capsys):
    """SIGKILL after checkpoint 4's files are written, before its rename: checkpoint 2 stays the latest complete
    one, `resume=latest` continues from it to the end, and the killed process's temporaries are cleared."""
    out = tmp_path / "run"
    args = ["train", *tiny_overrides(out, dog_dir, "max_steps=6", "checkpoint_every=2")]
    killed = subprocess.run([sys.executable, "-c", KILL_BEFORE_RENAME, *args], capture_output=True, text=True,
                            env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    left = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert left[0].startswith(".step_000004.tmp-") and left[1:] == ["step_000002"]
    assert main([*args, "resume=latest"]) == 0, capsys.readouterr().err
    assert (out / "weights.safetensors").is_file()
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step_000004", "step_000006"]
