import os
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"  # a test must never reach for the network
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"

import pytest  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures"


@pytest.fixture
def dog_dir() -> Path:
    return FIXTURES / "dog"


def tiny_overrides(out: Path, images: Path, *extra: str) -> list[str]:
    """Overrides that make a quick, quiet training run of the tiny model."""
    return ["model=tiny", f"output_dir={out}", f"concepts.0.images={images}", "concepts.0.class_word=dog",
            "resolution=64", "max_steps=3", "checkpoint_every=0", "report_to=none", *extra]


def make_weights(path: Path, token: str = "sks", class_word: str = "dog", seed: int = 1,
                 base_model: str = "tiny") -> Path:
    """A weights file for the tiny base whose K/V and token row differ clearly from the base."""
    import torch

    from cdvideo.data import weights
    from cdvideo.models import architectures as tiny

    base = tiny.build_components()
    gen = torch.Generator().manual_seed(seed)
    params = dict(base["unet"].named_parameters())
    kv = {n: params[n].detach() + 0.5 * torch.randn(params[n].shape, generator=gen)
          for n in weights.cross_attention_names(base["unet"])}
    rows = torch.randn(1, tiny.CROSS_DIM, generator=gen)
    return weights.save(path, weights.PersonalWeights(unet=kv, tokens=[token], class_words=[class_word],
                                                      embeddings=rows, metadata={"base_model": base_model}))


@pytest.fixture(scope="session")
def perturbed_weights(tmp_path_factory) -> Path:
    return make_weights(tmp_path_factory.mktemp("weights") / "dog.safetensors")
