"""Bases and motion adapters from single files: SD1.5 checkpoints (`.safetensors`/`.ckpt`) through diffusers'
`from_single_file` with a local config (offline), original AnimateDiff motion modules, and the checks that a
base, an adapter and a weights file fit together."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from cdvideo.data import builtins
from cdvideo.data.files import atomic_folder
from cdvideo.data.tensors import PICKLE_SUFFIXES, read_tensors
from cdvideo.errors import CdvideoError, first_line
from cdvideo.models import architectures as tiny

SINGLE_FILE_SUFFIXES = (".safetensors", *PICKLE_SUFFIXES)
CONFIGS = {"sd15": tiny.SD15_ID, "tiny": tiny.TINY_ID}  # architectures a single file can be read as


def is_single_file(model: str) -> bool:
    return Path(model).suffix in SINGLE_FILE_SUFFIXES and Path(model).is_file()


def config_folder(arch: str = "sd15") -> Path:
    """A diffusers folder holding only configs (and the tokenizer) of a built-in architecture, written once into
    ~/.cache/cdvideo: what `from_single_file(config=...)` needs to build the models offline."""
    if arch not in CONFIGS:
        if Path(arch).is_dir():
            return Path(arch)
        raise CdvideoError(f"model_config {arch!r}: choose {', '.join(CONFIGS)} or a diffusers folder")
    a = tiny.ARCHITECTURES[CONFIGS[arch]]
    folder = Path.home() / ".cache" / "cdvideo" / f"config-{arch}"
    if (folder / "model_index.json").is_file():
        return folder
    with atomic_folder(folder, replace=False) as tmp:  # another process may write it at the same time
        _write_config_folder(tmp, a)
    return folder


def _write_config_folder(tmp: Path, a: dict) -> None:
    """The diffusers folder of configs (no weights) that from_single_file reads architecture `a` with."""
    for sub in ("unet", "vae", "text_encoder", "scheduler"):
        (tmp / sub).mkdir(parents=True)
    (tmp / "unet" / "config.json").write_text(json.dumps({"_class_name": "UNet2DConditionModel", **a["unet"]}))
    (tmp / "vae" / "config.json").write_text(json.dumps({"_class_name": "AutoencoderKL", **a["vae"]}))
    from transformers import CLIPTextConfig  # lazy: start-up time

    CLIPTextConfig(vocab_size=49408, architectures=["CLIPTextModel"], **a["text"]).to_json_file(
        str(tmp / "text_encoder" / "config.json"))
    (tmp / "scheduler" / "scheduler_config.json").write_text(json.dumps({"_class_name": "DDPMScheduler",
                                                                         **tiny.SCHEDULER}))
    shutil.copytree(tiny.tokenizer_dir(), tmp / "tokenizer")
    index = {"_class_name": "StableDiffusionPipeline", "unet": ["diffusers", "UNet2DConditionModel"],
             "vae": ["diffusers", "AutoencoderKL"], "text_encoder": ["transformers", "CLIPTextModel"],
             "tokenizer": ["transformers", "CLIPTokenizer"], "scheduler": ["diffusers", "DDPMScheduler"],
             "safety_checker": [None, None], "feature_extractor": [None, None], "requires_safety_checker": False}
    (tmp / "model_index.json").write_text(json.dumps(index))


def load_single_file(path: str, config: str = "sd15", dtype: torch.dtype = torch.float32) -> dict:
    """tokenizer, text_encoder, vae, unet, scheduler (DDPM) of a one-file SD1.5 checkpoint."""
    from diffusers import DDPMScheduler, StableDiffusionPipeline  # lazy: start-up time

    read_tensors_check(path)
    try:
        pipe = StableDiffusionPipeline.from_single_file(
            path, config=str(config_folder(config)), local_files_only=True, torch_dtype=dtype, safety_checker=None,
            requires_safety_checker=False)
    except (OSError, ValueError, KeyError, RuntimeError) as e:
        raise CdvideoError(f"{path}: not an SD1.5 checkpoint for config {config} "
                           f"({first_line(e, 160)})") from None
    return {"tokenizer": pipe.tokenizer, "text_encoder": pipe.text_encoder.eval(), "vae": pipe.vae, "unet": pipe.unet,
            "scheduler": DDPMScheduler.from_config(pipe.scheduler.config)}


def read_tensors_check(path: str) -> None:
    """Refuse a pickle that holds more than tensors before diffusers opens it (a clear one-line error)."""
    if Path(path).suffix in PICKLE_SUFFIXES:
        read_tensors(path)


def load_motion_file(path: str, dtype: torch.dtype):
    """A MotionAdapter from one file: an original AnimateDiff motion module (`mm_sd_v15_v2.ckpt`,
    `v3_sd15_mm.ckpt`), converted by diffusers' own `convert_animatediff_checkpoint_to_diffusers`, or a diffusers
    MotionAdapter state dict (AnimateDiff-Lightning's `*_diffusers.safetensors`). The layout is read off the
    tensors and matched to a known adapter (SD1.5's, the miniature world's, the tiny one)."""
    from diffusers import MotionAdapter  # lazy: start-up time
    from diffusers.loaders.single_file_utils import convert_animatediff_checkpoint_to_diffusers  # lazy: start-up time

    state = read_tensors(path)
    while isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not any(".motion_modules." in k for k in state):
        raise CdvideoError(f"{path}: holds no motion modules (keys like down_blocks.0.motion_modules.0...); "
                           "is it a motion adapter?")
    if any(".temporal_transformer." in k for k in state):
        state = convert_animatediff_checkpoint_to_diffusers(state)
    adapter = MotionAdapter(**adapter_config_for(state))
    missing, unexpected = adapter.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise CdvideoError(f"{path}: not a motion module of a known layout ({len(missing)} tensors missing, "
                           f"{len(unexpected)} unexpected, e.g. {(missing or unexpected)[0]})")
    return adapter.to(dtype)


def adapter_config_for(state: dict) -> dict:
    """MotionAdapter config of a (diffusers-named) motion-module state dict: a known adapter's when channels and
    layers match, else AnimateDiff's SD1.5 defaults with the channels, layers and mid block found."""
    levels = sorted({int(k.split(".")[1]) for k in state if k.startswith("down_blocks.")})
    channels = tuple(int(state[f"down_blocks.{lv}.motion_modules.0.norm.weight"].shape[0]) for lv in levels
                     if f"down_blocks.{lv}.motion_modules.0.norm.weight" in state)
    layers = len({k.split(".")[3] for k in state if k.startswith("down_blocks.0.motion_modules.")})
    mid = any(k.startswith("mid_block.") for k in state)
    for cfg in known_adapter_configs():
        if tuple(cfg["block_out_channels"]) == channels and cfg.get("motion_layers_per_block", 2) == layers:
            return {**cfg, "use_motion_mid_block": mid}
    return {"block_out_channels": channels, "motion_layers_per_block": layers, "use_motion_mid_block": mid,
            "motion_mid_block_layers_per_block": 1, "motion_num_attention_heads": 8, "motion_norm_num_groups": 32,
            "motion_max_seq_length": 32}


def known_adapter_configs() -> list[dict]:
    """The motion adapters a one-file motion module may be: the built architectures and the bundled folders."""
    configs = [tiny.ARCHITECTURES[a]["adapter"] for a in (tiny.SD15_ID, tiny.TINY_ID)]
    for name in builtins.names():
        b = builtins.get(name)
        cfg_file = b.adapter_dir() / "config.json" if b.adapter_dir else None
        if cfg_file and cfg_file.is_file():
            cfg = json.loads(cfg_file.read_text())
            configs.append({k: v for k, v in cfg.items() if not k.startswith("_")})
    return configs


def check_adapter_fits(adapter, unet, adapter_name: str, base: str) -> None:
    """A one-line error naming both sides when a motion adapter was made for another UNet."""
    a, u = adapter.config, unet.config
    want = (tuple(u.block_out_channels), u.layers_per_block)
    have = (tuple(a.block_out_channels), a.motion_layers_per_block)
    if want != have:
        raise CdvideoError(f"motion adapter {adapter_name} (channels {list(have[0])}, {have[1]} layers per block) "
                           f"does not fit base {base} (channels {list(want[0])}, {want[1]} layers per block); "
                           "use an adapter made for this base")
