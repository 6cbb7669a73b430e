"""Fine-tuned K/V as LoRA for ComfyUI, AUTOMATIC1111 and kohya's tools: each change W - W0 factorised by
truncated SVD (Eckart-Young: the best rank-r approximation in Frobenius norm), in kohya's SD1.x key layout."""

from __future__ import annotations

import torch


def factorize(delta: torch.Tensor, rank: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(up (out, r), down (r, in)) with up @ down the best rank-r approximation of delta; rank None: exact."""
    d = delta.double()
    u, s, vh = torch.linalg.svd(d, full_matrices=False)
    r = min(d.shape) if rank is None else min(rank, min(d.shape))
    return (u[:, :r] * s[:r]), vh[:r]


def relative_error(delta: torch.Tensor, up: torch.Tensor, down: torch.Tensor) -> float:
    """||delta - up @ down||_F / ||delta||_F (0 when delta is 0)."""
    d = delta.double()
    norm = torch.linalg.matrix_norm(d)
    return float(torch.linalg.matrix_norm(d - up.double() @ down.double()) / norm) if norm > 0 else 0.0


def kohya_name(param: str) -> str:
    """'down_blocks.0...attn2.to_k.weight' -> 'lora_unet_down_blocks_0_..._attn2_to_k' (kohya's SD1.x naming)."""
    module = param.removesuffix(".weight")
    return "lora_unet_" + module.replace(".", "_")


def to_kohya(deltas: dict[str, torch.Tensor], rank: int | None
             ) -> tuple[dict[str, torch.Tensor], dict[str, float], float]:
    """kohya LoRA tensors, each layer's relative reconstruction error, and alpha.

    kohya applies up @ down * alpha / r, r a layer's rank. Layers narrower than the rank (or every layer at full
    rank) have their own r, so one alpha (the rank asked for, 1 at full rank) is stored for all and r / alpha is
    folded into `up`: every reader then applies exactly up @ down, diffusers' loader included (it takes one alpha
    for all layers)."""
    alpha = float(rank) if rank is not None else 1.0
    tensors, errors = {}, {}
    for param, delta in deltas.items():
        if delta.dim() != 2:
            continue  # biases (to_out.0.bias with params=crossattn) have no low-rank form
        up, down = factorize(delta, rank)
        errors[param] = relative_error(delta, up, down)
        name = kohya_name(param)
        tensors[f"{name}.lora_down.weight"] = down.float().contiguous()
        tensors[f"{name}.lora_up.weight"] = (up * (down.shape[0] / alpha)).float().contiguous()
        tensors[f"{name}.alpha"] = torch.tensor(alpha)
    return tensors, errors, alpha


def total_error(deltas: dict[str, torch.Tensor], errors: dict[str, float]) -> float:
    """Relative error over all layers together: sqrt(sum err_i^2 |d_i|^2) / sqrt(sum |d_i|^2)."""
    norms = {k: float(torch.linalg.matrix_norm(deltas[k].double())) for k in errors}
    den = sum(n * n for n in norms.values())
    return (sum((errors[k] * norms[k]) ** 2 for k in errors) / den) ** 0.5 if den > 0 else 0.0
