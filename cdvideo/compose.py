"""Composition of separately trained concepts (Custom Diffusion, Kumari et al. CVPR 2023, section 3.2)."""

from __future__ import annotations

from .errors import CdvideoError


def compose(ws, m):
    raise CdvideoError("composing several weights files needs `cdvideo compose` (not yet available)")
