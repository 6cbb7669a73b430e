"""The benchmark scripts' own code paths (their timings are printed, never asserted)."""

import importlib.util
from pathlib import Path


def script(name: str):
    """A benchmark script loaded as a module from its file (scripts/ is not a package and not on sys.path)."""
    spec = importlib.util.spec_from_file_location(name, Path(__file__).resolve().parents[1] / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


bench_train = script("bench_train")


def test_bare_step_in_bf16_counts_the_unets_flops():
    """The reference step of the GPU run (bf16 autocast, fp32 master K/V) also counts the UNet's FLOPs."""
    r = bench_train.bare("tiny", batch=1, resolution=64, steps=1, warmup=0, bf16=True)
    assert r["sec_per_step"] > 0
    assert r["unet_forward_flops"] == 11_040_768  # the tiny UNet's forward at 64 px, counted once (measured)
    two = bench_train.bare("tiny", batch=2, resolution=64, steps=1, warmup=0, bf16=True)
    assert two["unet_forward_flops"] == 2 * r["unet_forward_flops"]  # per sample, not per call
    line = bench_train.flop_line(r["unet_forward_flops"], 0.5, 0.55, "NVIDIA H200")
    assert "% of H200 bf16 peak" in line and line.count("TFLOP/s") == 2


def test_motion_bench_times_both_steps_side_by_side(capsys):
    """bench_motion.py's two steps run on the miniature model and print one table (timings are not asserted)."""
    script("bench_motion").main(["--model", "toyworld", "--resolution", "64", "--frames", "4", "--rank", "4",
                                 "--steps", "1", "--rounds", "1"])
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ") and "x |" in line]
    assert [row.split(" | ")[0] for row in rows] == ["| bare temporal-LoRA step", "| cdvideo motion step"]
    assert rows[0].endswith("| 1.00x |")
