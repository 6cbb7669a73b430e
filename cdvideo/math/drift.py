"""Semantic drift: phrase features -> 2D point set (ClassDiffusion, Algorithm 1). Pure torch math."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def normalize(feats: torch.Tensor) -> torch.Tensor:
    """L2-normalised rows: (N, D)."""
    return F.normalize(feats.double(), dim=-1)


def fit_pca_2d(class_feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean (D,) and 2 principal axes (2, D) of the class features (SVD of the centred matrix).

    Sign convention: each axis is flipped so that its largest-magnitude entry is positive, so the same input
    gives the same frame.
    """
    x = class_feats.double()
    mean = x.mean(dim=0)
    _, _, vh = torch.linalg.svd(x - mean, full_matrices=False)
    axes = vh[:2]
    signs = torch.sign(axes.gather(1, axes.abs().argmax(dim=1, keepdim=True)))
    return mean, axes * signs


def project(feats: torch.Tensor, mean: torch.Tensor, axes: torch.Tensor) -> torch.Tensor:
    """Coordinates of features in the fitted 2D frame: (N, 2)."""
    return (feats.double() - mean) @ axes.T


def cosine_distance(feats: torch.Tensor, centre: torch.Tensor) -> torch.Tensor:
    """1 - cos between each row (N, D) and a centre (D,)."""
    return 1.0 - F.cosine_similarity(feats.double(), centre.double()[None], dim=-1)


def percentile(value: float, population: torch.Tensor) -> float:
    """Percentage of `population` at or below `value` (0-100)."""
    return float((population.double() <= value).double().mean() * 100.0)


def drift_figures(class_feats: torch.Tensor, personal: torch.Tensor) -> dict:
    """Algorithm 1 on normalised features: 2D points of the class cloud and the personal phrase(s),
    the cloud's centroid, and each personal phrase's cosine distance from it with its percentile."""
    cls, per = normalize(class_feats), normalize(personal)
    mean, axes = fit_pca_2d(cls)
    centroid = cls.mean(dim=0)
    cloud_dist = cosine_distance(cls, centroid)
    dists = cosine_distance(per, centroid)
    return {
        "class_points": project(cls, mean, axes).tolist(),
        "centroid_point": project(centroid[None], mean, axes)[0].tolist(),
        "personal_points": project(per, mean, axes).tolist(),
        "personal_distances": dists.tolist(),
        "personal_percentiles": [percentile(float(d), cloud_dist) for d in dists],
        "class_distance_mean": float(cloud_dist.mean()),
    }
