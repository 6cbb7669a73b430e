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
    return [f"model=tiny", f"output_dir={out}", f"concepts.0.images={images}", "concepts.0.class_word=dog",
            "resolution=64", "max_steps=3", "checkpoint_every=0", "report_to=none", *extra]
