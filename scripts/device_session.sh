#!/usr/bin/env bash
# A session lent a GPU (the `device` tool: 15 minutes of device time, the machine's start included), prepared so that
# none of it goes to setting up. Here, once (PyPI reachable; the wheels go in .whl/, which git ignores):
#   bash scripts/device_session.sh fetch
# then one device call per part, each naming .whl in carry (the 15 minutes hold about two calls, start included):
#   bench: bash scripts/device_session.sh bench     (timeout_s 480; bench_gpu.sh, about 7 minutes)
#   build: bash scripts/device_session.sh build     (timeout_s 540; the world's GPU stages with the cuda profile)
# `build` copies the committed CPU stages (judge, text, vae) into a fresh build folder and trains the latents, unet,
# motion and controlnet stages there with --device cuda, each stage's log line timed; what finished comes back in
# $OUT as cuda_build.tgz.* (15 MB parts: cat cuda_build.tgz.* | tar xz), to export and report here on the CPU:
#   python -m cdvideo.apps.worldbuild --work cuda-build --stage export,report --assets A --docs D
# A rehearsal on the CPU (the flow, not the numbers; 20 min on 2 cores, 13.5 of them rendering and encoding the
# pretraining set): DEVICE=cpu SCALE=0.002 BUILD_S=3600 OUT=/tmp/out bash scripts/device_session.sh build
set -euo pipefail
cd "$(dirname "$0")/.."
mode="${1:-}"
DEVICE="${DEVICE:-cuda}"
SCALE="${SCALE:-1}"
PY="${PYTHON:-python3}"
export PYTHONUNBUFFERED=1

case "$mode" in
fetch)  # what the device's image lacks (.library/device/KINDS.md): diffusers, importlib_metadata; setuptools>=77
        # to install cdvideo (its license is an SPDX string)
    "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        -d .whl "diffusers==$("$PY" -c 'import diffusers; print(diffusers.__version__)')" importlib_metadata \
        "setuptools>=77"
    ls -l .whl
    exit 0 ;;
bench|build) ;;
*) echo "usage: bash scripts/device_session.sh fetch|bench|build" >&2; exit 2 ;;
esac

OUT="${OUT:?set OUT to a folder for the logs and weights (the device sets it)}"
mkdir -p "$OUT"
if ! "$PY" -c "import diffusers" 2> /dev/null; then  # on the device: the carried wheels, then cdvideo itself
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl
    export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi
"$PY" -c "from importlib.metadata import entry_points as e; assert e(group='cdvideo.builtins')" 2> /dev/null \
    || "$PY" -m pip install -q --no-index --no-deps --no-build-isolation -e .  # its entry points: model ids
command -v python > /dev/null || { mkdir -p /tmp/bin && ln -sf "$(command -v "$PY")" /tmp/bin/python \
    && export PATH="/tmp/bin:$PATH"; }  # bench_gpu.sh calls `python`; the device's image has `python3`
"$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())" | tee "$OUT/versions.txt"

if [ "$mode" = bench ]; then
    bash scripts/bench_gpu.sh 2>&1 | tee "$OUT/bench_gpu.log"
    exit 0
fi

work="${WORK:-/tmp/cuda-build}"  # emptied first: a fresh build folder
rm -rf "$work" && mkdir -p "$work"
for stage in judge text vae; do  # the CPU stages, as committed (the cuda profile's plans for them are the cpu's)
    cp "toyworld-build/$stage.done" "$work/"
done
cp toyworld-build/judge.safetensors "$work/" && cp -r toyworld-build/text_encoder toyworld-build/vae "$work/"
status=0
# stopped after BUILD_S seconds (default 420, inside the call's 540) so that what finished still comes back
timeout "${BUILD_S:-420}" "$PY" -m cdvideo.apps.worldbuild --work "$work" --device "$DEVICE" --scale "$SCALE" \
    --stage latents,unet,motion,controlnet 2>&1 | tee "$OUT/cuda_build.log" || status=$?
# the stages' weights, records and curves (not their round states: the wide UNet's would pass $OUT's 64 MiB)
(cd "$work" && tar czf - $(ls -d unet motion_adapter controlnet_mask curves ./*.done 2> /dev/null)) \
    | split -b 15M - "$OUT/cuda_build.tgz."
ls -l "$OUT"
exit "$status"
