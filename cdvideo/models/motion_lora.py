"""LoRA on a UNetMotionModel: the motion modules' temporal attention (what a motion LoRA holds) and the image
model's attention (MotionDirector's spatial path), trained as branches beside the Linear layers through torch
forward hooks (no library class is patched) and merged into the weights for rendering."""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from cdvideo.data.motion_lora import MotionLora, Pair
from cdvideo.errors import CdvideoError
from cdvideo.math.motion import lora_delta

PROJECTIONS = ("to_q", "to_k", "to_v", "to_out.0")


def temporal_modules(unet) -> list[str]:
    """The motion modules' attention projections (to_q, to_k, to_v, to_out.0 of attn1 and attn2)."""
    return [n for n, m in unet.named_modules() if isinstance(m, nn.Linear) and "motion_modules." in n
            and ".attn" in n and n.endswith(PROJECTIONS)]


def spatial_modules(unet) -> list[str]:
    """The image model's attention projections in its transformer blocks (self- and cross-attention)."""
    return [n for n, m in unet.named_modules() if isinstance(m, nn.Linear) and ".attentions." in n
            and ".transformer_blocks." in n and ".attn" in n and n.endswith(PROJECTIONS)]


class LoraBranch(nn.Module):
    """y = W x + up(down(x)) beside one Linear, through a forward hook (alpha = rank): the weight is never
    rebuilt, so a step costs what a LoRA should (tokens x rank x (in + out)). `up` starts at zero."""

    def __init__(self, out_features: int, in_features: int, rank: int, gen: torch.Generator):
        super().__init__()
        bound = 1 / math.sqrt(in_features)  # nn.Linear's init for the down matrix, as LoRA's reference code
        self.down = nn.Parameter((torch.rand(rank, in_features, generator=gen) * 2 - 1) * bound)
        self.up = nn.Parameter(torch.zeros(out_features, rank))
        self.enabled = True

    def hook(self, module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
        if not self.enabled:
            return output
        x = args[0]
        return output + F.linear(F.linear(x, self.down.to(x.dtype)), self.up.to(x.dtype))


class LoraSet:
    """LoRA branches on named Linear modules of a model, switched and trained together; `remove()` detaches them."""

    def __init__(self, model: nn.Module, names: list[str], rank: int, seed: int):
        if not names:
            raise CdvideoError("no attention projections to put a LoRA on: is this a UNetMotionModel?")
        gen, modules = torch.Generator().manual_seed(seed), dict(model.named_modules())
        self.layers: dict[str, LoraBranch] = {}
        self.handles = []
        for name in names:
            linear = modules[name]
            layer = LoraBranch(linear.out_features, linear.in_features, rank, gen).to(linear.weight.device)
            self.handles.append(linear.register_forward_hook(layer.hook))
            self.layers[name] = layer

    def remove(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles = []

    def parameters(self) -> list[nn.Parameter]:
        return [p for layer in self.layers.values() for p in (layer.down, layer.up)]

    def enable(self, on: bool = True, train: bool | None = None) -> None:
        """Switch the LoRA on or off; `train` sets whether its parameters take gradients."""
        for layer in self.layers.values():
            layer.enabled = on
            if train is not None:
                layer.down.requires_grad_(train)
                layer.up.requires_grad_(train)

    def export(self, metadata: dict | None = None) -> MotionLora:
        return MotionLora({n: Pair(layer.down.detach().float().cpu().clone(), layer.up.detach().float().cpu().clone())
                           for n, layer in self.layers.items()}, dict(metadata or {}))

    def state(self) -> dict[str, torch.Tensor]:
        """The LoRA tensors by `<module>.down` / `<module>.up`, for a training checkpoint."""
        return {f"{n}.{k}": getattr(layer, k).detach().cpu().clone() for n, layer in self.layers.items()
                for k in ("down", "up")}

    def load_state(self, state: dict[str, torch.Tensor]) -> None:
        with torch.no_grad():
            for name, layer in self.layers.items():
                layer.down.copy_(state[f"{name}.down"])
                layer.up.copy_(state[f"{name}.up"])


def check_fits(unet, lora: MotionLora, name: str, adapter: str) -> dict[str, torch.Tensor]:
    """The weights each pair changes; a one-line error naming the file and the adapter when they do not match."""
    params = dict(unet.named_parameters())
    found = {}
    for module, pair in lora.pairs.items():
        weight = params.get(f"{module}.weight")
        if weight is None:
            raise CdvideoError(f"motion LoRA {name} changes {module}, which the motion adapter {adapter} does not "
                               "have: it was trained for another adapter (e.g. v2 with a mid block vs v3)")
        shape = (pair.up.shape[0], pair.down.shape[1])
        if tuple(weight.shape) != shape:
            raise CdvideoError(f"motion LoRA {name}: {module} is {shape[0]}x{shape[1]} in the file but "
                               f"{weight.shape[0]}x{weight.shape[1]} in the motion adapter {adapter}")
        found[module] = weight
    return found


@torch.no_grad()
def apply_motion_loras(unet, loras: list[tuple[MotionLora, float, str]], adapter: str) -> None:
    """Merge each (LoRA, scale, name) into the motion modules' weights: W += scale * up @ down. Every file is
    checked against the model before any weight changes, so a bad one leaves the model untouched."""
    targets = [check_fits(unet, lora, name, adapter) for lora, _, name in loras]
    for (lora, scale, _), weights in zip(loras, targets):
        for module, pair in lora.pairs.items():
            w = weights[module]
            w.add_(lora_delta(pair.down, pair.up, pair.alpha, scale).to(w.device, w.dtype))
