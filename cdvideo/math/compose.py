"""Merging separately trained concepts into one file (Custom Diffusion, Kumari et al. CVPR 2023, sec. 3.2).

For each cross-attention K/V matrix W (out x in), with W0 the base weight:
    minimise ||(W - W0) C_reg^T||_F  subject to  W C^T = V,
C_reg: text features of generic captions under the base model, C: features of each concept's captions,
V: each fine-tuned model's outputs on its own captions. Lagrange multipliers give, with M = C_reg^T C_reg,
    W = W0 + (V - W0 C^T) (C M^-1 C^T)^-1 C M^-1,
solved here with Cholesky factorisations in float64 (no explicit inverse). M gets a small ridge
(1e-5 of its mean diagonal): text features after the final LayerNorm can span less than the full width,
and a singular M would let the null directions blow up. The constraints still hold exactly.
"""

from __future__ import annotations

import torch

from cdvideo.errors import CdvideoError

RIDGE = 1e-5


def _cholesky(a: torch.Tensor) -> torch.Tensor:
    """Cholesky factor with the smallest diagonal jitter that makes `a` positive definite."""
    scale = a.diagonal().mean().clamp_min(1e-30)
    for jitter in (0.0, 1e-12, 1e-10, 1e-8, 1e-6):
        factor, info = torch.linalg.cholesky_ex(a + jitter * scale * torch.eye(len(a), dtype=a.dtype))
        if info == 0:
            return factor
    raise CdvideoError("the composition constraints are degenerate (identical target captions?)")


def constraint_factors(gram_reg: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The layer-independent part of Eq. 4: A = M^-1 C^T (in, n) and the Cholesky factor of C M^-1 C^T (n, n).

    gram_reg: (in, in) = C_reg^T C_reg, with the ridge added here; c: (n, in). Float64.
    """
    m, c = gram_reg.double(), c.double()
    m = m + RIDGE * m.diagonal().mean() * torch.eye(len(m), dtype=m.dtype)
    a = torch.cholesky_solve(c.T, _cholesky(m))  # M^-1 C^T: (in, n)
    return a, _cholesky(c @ a)


def merge_with(w0: torch.Tensor, v: torch.Tensor, c: torch.Tensor, a: torch.Tensor,
               s_factor: torch.Tensor) -> torch.Tensor:
    """W = W0 + (V - W0 C^T) S^-1 A^T for one matrix, given `constraint_factors`. w0: (out, in), v: (out, n)."""
    w0 = w0.double()
    r = v.double() - w0 @ c.double().T  # (out, n)
    x = torch.cholesky_solve(r.T, s_factor).T  # R S^-1: (out, n)
    return w0 + x @ a.T


def constrained_merge(w0: torch.Tensor, gram_reg: torch.Tensor, c: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """argmin_W ||(W - W0) C_reg^T||_F s.t. W C^T = V (Kumari et al. 2023, Eq. 4); gram_reg = C_reg^T C_reg.

    w0: (out, in), gram_reg: (in, in), c: (n, in), v: (out, n). Computed in float64.
    """
    return merge_with(w0, v, c, *constraint_factors(gram_reg, c))


def average_merge(w0: torch.Tensor, tuned: list[torch.Tensor]) -> torch.Tensor:
    """W0 + mean of the fine-tuned deltas."""
    return w0 + torch.stack([t.double() - w0.double() for t in tuned]).mean(dim=0)
