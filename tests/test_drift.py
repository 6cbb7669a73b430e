import json

import pytest
import torch

from cdvideo.apps.cli import main
from cdvideo.math.drift import cosine_distance, drift_figures, fit_pca_2d, normalize, percentile, project


def cloud(seed=0, n=20, d=8):
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed))


def test_pca_is_deterministic_and_centred():
    x = normalize(cloud())
    m1, a1 = fit_pca_2d(x)
    m2, a2 = fit_pca_2d(x.clone())
    assert torch.equal(a1, a2) and torch.equal(m1, m2)
    pts = project(x, m1, a1)
    assert torch.allclose(pts.mean(dim=0), torch.zeros(2, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(a1 @ a1.T, torch.eye(2, dtype=torch.float64), atol=1e-12)
    # sign convention: the largest-magnitude entry of each axis is positive, whatever SVD returned
    _, flipped = fit_pca_2d(-x)
    assert (flipped.gather(1, flipped.abs().argmax(1, keepdim=True)) > 0).all()
    assert torch.allclose(flipped.abs(), a1.abs())


def test_distances_and_percentiles():
    x = normalize(cloud())
    centroid = x.mean(0)
    assert cosine_distance(centroid[None], centroid).item() == pytest.approx(0.0, abs=1e-12)
    assert cosine_distance(torch.tensor([[0.0, 1.0]]), torch.tensor([1.0, 0.0])).item() == pytest.approx(1.0)
    assert percentile(0.5, torch.tensor([0.1, 0.4, 0.6, 0.9])) == 50.0
    fig = drift_figures(cloud(), centroid[None] * 3.0)  # a phrase at the centroid
    assert fig["personal_distances"][0] == pytest.approx(0.0, abs=1e-12)
    assert fig["personal_percentiles"][0] == 0.0
    assert fig["centroid_point"] == pytest.approx([0.0, 0.0], abs=1e-12)


def test_drift_command_on_tiny_model(tmp_path, perturbed_weights, capsys):
    phrases = tmp_path / "adj.txt"
    phrases.write_text("happy\nsleepy\nbig\nsmall\nwet\n")
    out = tmp_path / "plots" / "dog"
    assert main(["drift", "--weights", str(perturbed_weights), "--weights", str(perturbed_weights),
                 "--phrases", str(phrases), "-o", str(out)]) == 0
    data = json.loads((tmp_path / "plots" / "dog.json").read_text())
    assert (tmp_path / "plots" / "dog.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert data["phrases"] == ["happy dog", "sleepy dog", "big dog", "small dog", "wet dog"]
    assert len(data["class_points"]) == 5 and len(data["runs"]) == 2
    assert data["runs"][0]["after"] == data["runs"][1]["after"]
    before, after = data["before"], data["runs"][0]["after"]  # the perturbed token row drifts from its class
    assert after["distance"] > 2 * before["distance"] and after["percentile"] == 100.0 and before["percentile"] < 100
    assert abs(after["distance"] - 0.0959) < 1e-3 and abs(before["distance"] - 0.0363) < 1e-3  # measured, seeded
    assert main(["drift", "--weights", str(perturbed_weights), "-o", str(out)]) == 0
    assert (tmp_path / "plots" / "dog-2.png").is_file()  # never overwritten
    assert len(json.loads((tmp_path / "plots" / "dog-2.json").read_text())["phrases"]) >= 70


def test_drift_over_checkpoints(tmp_path, dog_dir):
    from conftest import tiny_overrides
    assert main(["train", *tiny_overrides(tmp_path / "run", dog_dir, "max_steps=2", "checkpoint_every=1")]) == 0
    ckpts = sorted((tmp_path / "run" / "checkpoints").iterdir())
    assert main(["drift", *sum((["--weights", str(c)] for c in ckpts), []), "-o", str(tmp_path / "steps")]) == 0
    labels = [r["label"] for r in json.loads((tmp_path / "steps.json").read_text())["runs"]]
    assert labels == ["run step 1", "run step 2"]


def test_drift_refuses_a_token_of_several_vectors(tmp_path, dog_dir, capsys):
    """Drift places one embedding among its class: a multi-vector token is refused in one line, from a weights file
    and from a checkpoint of a run that trained one, and nothing is written."""
    from conftest import make_weights, tiny_overrides
    multi = make_weights(tmp_path / "multi.safetensors", vectors=3)
    assert main(["train", *tiny_overrides(tmp_path / "run", dog_dir, "max_steps=1", "checkpoint_every=1",
                                          "concepts.0.vectors=2")]) == 0
    ckpt = next((tmp_path / "run" / "checkpoints").iterdir())
    for source in (multi, ckpt):
        capsys.readouterr()
        assert main(["drift", "--weights", str(source), "-o", str(tmp_path / "plots" / "d")]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith(f"error: {source}: token 'sks' has several embedding vectors") and "\n" not in err
    assert not (tmp_path / "plots").exists()
