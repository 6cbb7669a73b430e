import os
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"  # a test must never reach for the network
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
if os.environ.get("PYTEST_XDIST_WORKER"):  # pytest -n 2: one thread per worker (and its subprocesses), not two
    os.environ["OMP_NUM_THREADS"] = "1"

import pytest  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures"

# The files that take longest (worker-seconds in the suite, `--durations=0` on 2 cores, 2026-12-08: 130, 83, 60, 48,
# 40, 39, 32, 32, 28, 24 s): scheduled first, slowest first, so that the two workers (scripts/test.sh: one file per
# worker, in collection order) finish together instead of one starting the demo's late (longest-first scheduling;
# the rest keep their order).
SLOWEST_FIRST = ("test_toyworld_demo.py", "test_toyworld_model.py", "test_ui_serving.py", "test_motion_train.py",
                 "test_controlnet.py", "test_cli.py", "test_train.py", "test_worldbuild.py", "test_ui.py",
                 "test_eval.py")


def pytest_collection_modifyitems(items) -> None:
    rank = {name: i for i, name in enumerate(SLOWEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: each file's tests keep their order


@pytest.fixture
def dog_dir() -> Path:
    return FIXTURES / "dog"


def tiny_overrides(out: Path, images: Path, *extra: str) -> list[str]:
    """Overrides that make a quick, quiet training run of the tiny model."""
    return ["model=tiny", f"output_dir={out}", f"concepts.0.images={images}", "concepts.0.class_word=dog",
            "resolution=64", "max_steps=3", "checkpoint_every=0", "report_to=none", *extra]


def make_weights(path: Path, token: str = "sks", class_word: str = "dog", seed: int = 1,
                 base_model: str = "tiny", vectors: int = 1) -> Path:
    """A weights file for the tiny base whose K/V and token row(s) differ clearly from the base."""
    import torch

    from cdvideo.data import weights
    from cdvideo.data.config import vector_tokens
    from cdvideo.models import architectures as tiny

    base = tiny.build_components()
    gen = torch.Generator().manual_seed(seed)
    params = dict(base["unet"].named_parameters())
    kv = {n: params[n].detach() + 0.5 * torch.randn(params[n].shape, generator=gen)
          for n in weights.cross_attention_names(base["unet"])}
    rows = torch.randn(vectors, tiny.CROSS_DIM, generator=gen)
    tokens = vector_tokens(token, vectors)
    return weights.save(path, weights.PersonalWeights(unet=kv, tokens=tokens, class_words=[class_word] * vectors,
                                                      embeddings=rows, metadata={"base_model": base_model}))


@pytest.fixture(scope="session")
def perturbed_weights(tmp_path_factory) -> Path:
    return make_weights(tmp_path_factory.mktemp("weights") / "dog.safetensors")


def release_openmp_team() -> None:
    """Give back the OpenMP team of the calling (test) thread before the web app's jobs run in-process.

    `cdvideo ui`'s main thread never runs torch, so a job's thread holds the process's only OpenMP team. The test
    process's main thread has run torch: its idle team stays, and with more OpenMP threads than cores libgomp makes
    every team sleep between parallel regions, so the job would run 2-3x slower than served (docs/benchmarks.md,
    "The web app's jobs"). `omp_pause_resource_all` (OpenMP 5.0) frees the caller's team; the next torch call in
    this thread makes a new one."""
    import ctypes
    import glob

    import torch

    for lib in glob.glob(os.path.join(os.path.dirname(torch.__file__), "lib", "libgomp*.so*")):
        ctypes.CDLL(lib).omp_pause_resource_all(1)  # omp_pause_soft


def source_gif(path, frames: int = 6, size: tuple[int, int] = (80, 48)):
    """A white square crossing a gray field: another length (6 frames) and size (80 x 48) than the clip's."""
    import numpy as np
    from PIL import Image

    w, h = size
    images = []
    for i in range(frames):
        a = np.full((h, w, 3), 90, np.uint8)
        x = 4 + i * (w - 20) // (frames - 1)
        a[h // 2 - 8:h // 2 + 8, x:x + 16] = 255
        images.append(Image.fromarray(a))
    images[0].save(path, save_all=True, append_images=images[1:], duration=125, loop=0)
    return path


@pytest.fixture(scope="session")
def controlnet(tmp_path_factory):
    """A ControlNet made from the tiny base's UNet (diffusers' `from_unet`), its condition embedding bringing 64 px
    down to the latents' 8."""
    from diffusers import ControlNetModel

    from cdvideo.models import architectures as tiny

    folder = tmp_path_factory.mktemp("cn") / "tiny-controlnet"
    ControlNetModel.from_unet(tiny.build_components()["unet"], conditioning_embedding_out_channels=(8, 8, 16, 16)) \
        .save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def ip_adapter(tmp_path_factory):
    """A random plain IP-Adapter for the tiny base in h94's layout: ip-adapter.safetensors, image_encoder/."""
    from cdvideo.models import architectures as tiny

    return tiny.save_ip_adapter(tmp_path_factory.mktemp("ipa") / "models")


def tiny_unet():
    """A UNet2DConditionModel of a few thousand weights: a stand-in for the world's in the rounds' bookkeeping."""
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(block_out_channels=(8, 8), layers_per_block=1, sample_size=8, cross_attention_dim=8,
                                norm_num_groups=4, attention_head_dim=2,
                                down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"))
