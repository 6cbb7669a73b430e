"""Motion LoRA files: LoRA pairs on the motion modules' temporal attention, read from and written in the layouts
people load.

- `animatediff`: AnimateDiff's original keys, what ComfyUI-AnimateDiff-Evolved and sd-webui-animatediff read
  (Evolved drops every key without `temporal`), and the official v2 camera MotionLoRAs (.ckpt), e.g.
  `down_blocks.0.motion_modules.0.temporal_transformer.transformer_blocks.0.attention_blocks.0`
  + `.processor.to_q_lora.down.weight`
- `diffusers`: `pipe.load_lora_weights`' keys (peft), e.g.
  `unet.down_blocks.0.motion_modules.0.transformer_blocks.0.attn1.to_q.lora_A.weight` (diffusers' own
  conversion drops `.temporal_transformer`, renames `attention_blocks.0` to `attn1` and prefixes `unet.`).

In memory a LoRA is {module: Pair}, modules named as in diffusers' UNetMotionModel (`...attn1.to_out.0`). Every
file is written with alpha = rank (no alpha keys), which every one of those loaders reads as scale 1.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch

from cdvideo.data.files import atomic_path
from cdvideo.errors import CdvideoError, first_line

LAYOUTS = ("animatediff", "diffusers")
PROJECTIONS = {"to_q": "to_q", "to_k": "to_k", "to_v": "to_v", "to_out": "to_out.0"}  # original -> diffusers
_LORA_KEY = re.compile(
    r"^(?P<module>.+?)\.(?:processor\.(?P<proc>to_q|to_k|to_v|to_out)_lora\.(?P<p1>down|up)\.weight"
    r"|lora_(?P<ab>A|B)(?:\.[A-Za-z0-9_]+)?\.weight|lora\.(?P<p2>down|up)\.weight|lora_(?P<p3>down|up)\.weight"
    r"|(?P<alpha>alpha))$")


@dataclass
class Pair:
    """One projection's LoRA: down (rank, in), up (out, rank); alpha None means alpha = rank."""
    down: torch.Tensor
    up: torch.Tensor
    alpha: float | None = None

    @property
    def rank(self) -> int:
        return self.down.shape[0]


@dataclass
class MotionLora:
    pairs: dict[str, Pair]
    metadata: dict[str, str] = field(default_factory=dict)

    @property
    def rank(self) -> int:
        return max(p.rank for p in self.pairs.values())


def from_original(module: str) -> str:
    """AnimateDiff's module path -> diffusers' (`.temporal_transformer` dropped, attention_blocks.N -> attn(N+1))."""
    module = module.replace(".temporal_transformer.", ".")
    return re.sub(r"\.attention_blocks\.(\d+)", lambda m: f".attn{int(m.group(1)) + 1}", module)


def to_original(module: str) -> str:
    """diffusers' module path -> AnimateDiff's (`...motion_modules.N.temporal_transformer...attention_blocks.K`)."""
    module = re.sub(r"(\.motion_modules\.\d+)\.", r"\1.temporal_transformer.", module, count=1)
    return re.sub(r"\.attn(\d+)", lambda m: f".attention_blocks.{int(m.group(1)) - 1}", module)


def parse_state_dict(state: dict[str, torch.Tensor], name: str) -> dict[str, Pair]:
    """{module: Pair} from any of the layouts; a one-line error naming `name` for keys that are not a motion LoRA."""
    if isinstance(state.get("state_dict"), dict):  # a training checkpoint's nesting
        state = state["state_dict"]
    parts: dict[str, dict] = {}
    for key, value in state.items():
        k = key.removeprefix("module.").removeprefix("unet.").removeprefix("base_model.model.")
        m = _LORA_KEY.match(k)
        if m is None or "motion_modules." not in k:
            raise CdvideoError(f"{name}: key {key!r} is not a LoRA on the motion modules; give a motion LoRA "
                               "(AnimateDiff's or diffusers' layout), not an image LoRA or a motion module")
        module = from_original(m["module"]) if ".temporal_transformer." in k else m["module"]
        if m["proc"]:
            module = f"{module}.{PROJECTIONS[m['proc']]}"
        part = m["p1"] or m["p2"] or m["p3"] or {"A": "down", "B": "up"}.get(m["ab"] or "") or "alpha"
        parts.setdefault(module, {})[part] = value
    pairs = {}
    for module, p in sorted(parts.items()):
        if "down" not in p or "up" not in p:
            raise CdvideoError(f"{name}: {module} has only its {', '.join(sorted(p))} matrix; the file is incomplete")
        down, up = p["down"].float(), p["up"].float()
        if down.ndim != 2 or up.ndim != 2 or up.shape[1] != down.shape[0]:
            raise CdvideoError(f"{name}: {module}: LoRA matrices {tuple(down.shape)} and {tuple(up.shape)} do not pair")
        pairs[module] = Pair(down, up, float(p["alpha"]) if "alpha" in p else None)
    if not pairs:
        raise CdvideoError(f"{name}: holds no LoRA weights")
    return pairs


def read(path: str | Path) -> MotionLora:
    """A motion LoRA file (.safetensors, .ckpt/.pt/.pth/.bin) in either layout, or a folder holding one."""
    path = Path(path)
    if path.is_dir():
        found = sorted(p for p in path.iterdir() if p.suffix in (".safetensors", ".ckpt", ".pt", ".pth", ".bin"))
        if len(found) != 1:
            raise CdvideoError(f"{path}: a folder with one motion LoRA file was expected, found {len(found)}")
        path = found[0]
    if not path.is_file():
        raise CdvideoError(f"motion LoRA {path} not found")
    metadata: dict[str, str] = {}
    try:
        if path.suffix == ".safetensors":
            from safetensors import safe_open  # lazy: start-up time

            with safe_open(str(path), framework="pt") as f:
                metadata = dict(f.metadata() or {})
                state = {k: f.get_tensor(k) for k in f.keys()}
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # safetensors and torch raise several types for a damaged file
        raise CdvideoError(f"{path}: not a readable weights file ({first_line(e, 100)})") from None
    if not isinstance(state, dict):
        raise CdvideoError(f"{path}: holds a {type(state).__name__}, not a state dict of LoRA weights")
    return MotionLora(parse_state_dict(state, str(path)), metadata)


def state_dict(lora: MotionLora, layout: str) -> dict[str, torch.Tensor]:
    """The LoRA's tensors under `layout`'s keys (alpha folded into `up`, so alpha = rank holds for every loader)."""
    if layout not in LAYOUTS:
        raise CdvideoError(f"motion LoRA layout {layout!r}: use one of {', '.join(LAYOUTS)}")
    out = {}
    for module, p in lora.pairs.items():
        up = p.up * (p.alpha / p.rank if p.alpha is not None else 1.0)
        if layout == "diffusers":
            out[f"unet.{module}.lora_A.weight"], out[f"unet.{module}.lora_B.weight"] = p.down, up
        else:
            attn, proj = module.rsplit(".to_", 1)
            proc = "to_out" if proj == "out.0" else f"to_{proj}"
            base = f"{to_original(attn)}.processor.{proc}_lora"
            out[f"{base}.down.weight"], out[f"{base}.up.weight"] = p.down, up
    return {k: v.detach().contiguous().cpu() for k, v in out.items()}


def write(lora: MotionLora, path: str | Path, layout: str = "animatediff", dtype: torch.dtype = torch.float16
          ) -> Path:
    """Write the LoRA atomically in `layout` as safetensors, with its metadata (and the layout) recorded."""
    from safetensors.torch import save_file  # lazy: start-up time

    path = Path(path)
    tensors = {k: v.to(dtype) for k, v in state_dict(lora, layout).items()}
    meta = {**{k: v if isinstance(v, str) else json.dumps(v) for k, v in lora.metadata.items()}, "layout": layout}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)
    return path
