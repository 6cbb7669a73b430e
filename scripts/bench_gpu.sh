#!/usr/bin/env bash
# The GPU targets of docs/benchmarks.md in one run (one H100/H200; about 7 minutes with model building):
#   bash scripts/bench_gpu.sh 2>&1 | tee bench_gpu.log
# 1. training at 512 px, batch 2, bf16 autocast (fp32 master K/V and token rows): seconds per step x 500, peak VRAM,
#    the UNet's FLOP utilisation; compile=true as a second line (it pays only once the graph is warm).
# 2. a 16-frame 512x512 clip, 25 steps with guidance, bf16, cdvideo animate against a plain AnimateDiffPipeline.
# 3. a motion-LoRA training step (16 frames at 512 px, bf16) against the bare temporal-LoRA step.
# 4. the UNet in NCHW (the default) against channels-last (a few percent at most on CPU, 2026-12-07): SD1.5's UNet
#    at 512 px and the miniature model's in bf16, the demo's training run.
set -euo pipefail
cd "$(dirname "$0")/.."
python scripts/bench_train.py --resolution 512 --batch-sizes 2 --steps 50 --warmup 5 --rounds 1 -- mixed_precision=bf16
python scripts/bench_train.py --resolution 512 --batch-sizes 2 --steps 50 --warmup 10 --rounds 1 -- mixed_precision=bf16 compile=true
formats=gif; python -c "import imageio_ffmpeg" 2>/dev/null && formats=mp4,gif  # MP4 needs imageio-ffmpeg's binary
python scripts/bench_animate.py --resolution 512 --num-frames 16 --steps 25 --rounds 2 --dtype bfloat16 --formats $formats
python scripts/bench_motion.py --resolution 512 --frames 16 --steps 10 --rounds 2 --bf16
python scripts/bench_memory_format.py --device cuda --dtype bfloat16 --sd15 --resolution 512 --pairs 8 \
    --train-steps 30 --train-pairs 2
