"""Personalization metrics as pure functions of feature tensors (no models here; see extractors.py)."""

from __future__ import annotations

import re
from typing import Sequence

import torch
import torch.nn.functional as F


def paired_cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """cos(a_i, b_i) per row: CLIP-T (image vs prompt) and BLIP-T (ITC features), DreamBooth/ClassDiffusion."""
    return F.cosine_similarity(a.double(), b.double(), dim=-1)


def mean_cosine_to_set(gen: torch.Tensor, refs: torch.Tensor) -> torch.Tensor:
    """Mean cosine of each generated feature to all reference features: CLIP-I / DINO-I (DreamBooth, sec. 4.1)."""
    g, r = F.normalize(gen.double(), dim=-1), F.normalize(refs.double(), dim=-1)
    return (g @ r.T).mean(dim=1)


def max_query_cosine(query_feats: torch.Tensor, text_feats: torch.Tensor) -> torch.Tensor:
    """BLIP-2 ITC score per pair: max over the image's query tokens of cos(query, text). (N, Q, D), (N, D)."""
    q, t = F.normalize(query_feats.double(), dim=-1), F.normalize(text_feats.double(), dim=-1)
    return torch.einsum("nqd,nd->nq", q, t).max(dim=1).values


def temporal_consistency(frame_feats: torch.Tensor) -> float:
    """Mean cosine of consecutive frames' image features (F, D); 1.0 for a single frame."""
    if len(frame_feats) < 2:
        return 1.0
    return float(paired_cosine(frame_feats[:-1], frame_feats[1:]).mean())


def strip_tokens(prompt: str, tokens: Sequence[str]) -> str:
    """The prompt without personal tokens: 'a sks dog on the beach' -> 'a dog on the beach'."""
    for tok in tokens:
        prompt = re.sub(rf"(?<!\S){re.escape(tok)}(?!\S)", " ", prompt)
    return re.sub(r"\s+", " ", prompt).strip()


def summarize(values: Sequence[float]) -> dict:
    """Mean and standard deviation of a metric over samples."""
    t = torch.tensor([v for v in values if v == v], dtype=torch.float64)  # NaN = not computed
    if len(t) == 0:
        return {"mean": None, "std": None, "n": 0}
    return {"mean": float(t.mean()), "std": float(t.std(unbiased=False)), "n": len(t)}


def bootstrap_ci(values: Sequence[float], level: float = 0.95, resamples: int = 10_000,
                 seed: int = 0) -> tuple[float, float, float]:
    """(mean, low, high): percentile bootstrap interval of the mean (Efron & Tibshirani 1993, ch. 13); for paired
    differences pass the per-pair differences."""
    t = torch.tensor([v for v in values if v == v], dtype=torch.float64)
    if len(t) == 0:
        return float("nan"), float("nan"), float("nan")
    g = torch.Generator().manual_seed(seed)
    means = t[torch.randint(len(t), (resamples, len(t)), generator=g)].mean(dim=1)
    lo, hi = torch.quantile(means, torch.tensor([(1 - level) / 2, (1 + level) / 2], dtype=torch.float64)).tolist()
    return float(t.mean()), lo, hi
