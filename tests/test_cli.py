import subprocess
import sys

from conftest import ROOT, tiny_overrides

from cdvideo.apps.cli import main


def test_train_command_writes_weights(tmp_path, dog_dir, capsys):
    code = main(["train", "--config", str(ROOT / "configs/train/tiny.yaml"),
                 *tiny_overrides(tmp_path / "cli", dog_dir, "max_steps=2")])
    assert code == 0
    assert (tmp_path / "cli" / "weights.safetensors").is_file()
    assert "wrote" in capsys.readouterr().out


def test_user_mistakes_are_one_line_without_traceback(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "cdvideo", "train", "--config", str(ROOT / "configs/train/tiny.yaml"),
         f"output_dir={tmp_path / 'o'}", f"concepts.0.images={tmp_path / 'nowhere'}"],
        capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "nowhere not found" in errors[0]
    assert not (tmp_path / "o").exists()  # nothing written for a run that could not start


def test_help_and_a_mistyped_flag_answer_without_loading_torch():
    """The parser never loads torch or diffusers (about 0.5 s, against 3.8 s when the demo's settings came with
    the demo's modules): `cdvideo --help`, a command's help and a mistyped flag answer at once."""
    check = ("import sys\nfrom cdvideo.apps.cli import main\n"
             "for args in (['--help'], ['demo', '--help'], ['animate', '--help'], ['demo', '--bogus']):\n"
             "    try:\n        main(args)\n    except SystemExit:\n        pass\n"
             "print(sorted(m for m in ('torch', 'diffusers', 'transformers') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert proc.stdout.strip().endswith("[]"), proc.stdout[-300:] + proc.stderr[-500:]
    assert "unrecognized arguments: --bogus" in proc.stderr


def test_bad_override_names_the_key(capsys):
    assert main(["train", "--config", str(ROOT / "configs/train/tiny.yaml"), "max_stepz=3"]) == 2
    assert "unknown key 'max_stepz'" in capsys.readouterr().err


def test_two_process_training(tmp_path, dog_dir):
    """The accelerate/torchrun path: DDP over the K/V, the token-row gradient reduced by hand, one writer."""
    import os

    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "cdvideo", "train",
           *tiny_overrides(tmp_path / "ddp", dog_dir, "max_steps=2")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, cwd=ROOT,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.count("wrote") == 1 and "lr=4.00e-05" in proc.stderr  # lr scaled by 2 processes
    from cdvideo.data import weights
    assert weights.load(tmp_path / "ddp" / "weights.safetensors").tokens == ["sks"]
