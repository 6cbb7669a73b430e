"""Readers and writers of the personalization formats other tools use, as plain tensors:

- Custom Diffusion / ClassDiffusion folders (diffusers' `train_custom_diffusion.py`, the public ClassDiffusion
  code): `pytorch_custom_diffusion_weights.{bin,safetensors}` with `<layer>.processor.to_k_custom_diffusion.weight`
  keys, plus one `<token>.{bin,safetensors}` per token holding `{token: row}`.
- Textual-inversion embeddings: diffusers' `{token: row(s)}`, AUTOMATIC1111's `.pt` (`string_to_param`) and
  `.safetensors` (`emb_params`). A file with n vectors gives tokens `name`, `name_1` ... `name_{n-1}`, which
  diffusers' pipelines expand in prompts by themselves.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from cdvideo.data.config import vector_tokens
from cdvideo.data.files import file_stem
from cdvideo.data.tensors import read_tensors
from cdvideo.errors import CdvideoError

CD_WEIGHTS = ("pytorch_custom_diffusion_weights.safetensors", "pytorch_custom_diffusion_weights.bin")
CD_KEY = re.compile(r"^(?P<layer>.+\.attn2)\.processor\.(?P<proj>to_k|to_v|to_q|to_out)_custom_diffusion"
                    r"(?P<out>\.0)?\.(?P<param>weight|bias)$")


def is_custom_diffusion_folder(path: Path) -> bool:
    return path.is_dir() and any((path / f).is_file() for f in CD_WEIGHTS)


def read_custom_diffusion(folder: Path) -> tuple[dict[str, torch.Tensor], list[str], torch.Tensor]:
    """(K/V tensors under UNet2DConditionModel names, tokens, token rows (N, D)) of a Custom Diffusion folder."""
    file = next(folder / f for f in CD_WEIGHTS if (folder / f).is_file())
    raw = read_tensors(file)
    unet, unknown = {}, []
    for key, value in raw.items():
        if key.endswith(".processor") and value == {}:
            continue  # diffusers' marker for a processor without weights (self-attention)
        m = CD_KEY.match(key)
        if m is None or not isinstance(value, torch.Tensor):
            unknown.append(key)
            continue
        out = ".0" if m["proj"] == "to_out" else ""
        unet[f"{m['layer']}.{m['proj']}{out}.{m['param']}"] = value.float()
    if unknown or not unet:
        raise CdvideoError(f"{file}: {len(unknown)} keys are not Custom Diffusion cross-attention weights (e.g. "
                           f"{unknown[0] if unknown else 'none found'}); expected "
                           "'<layer>.attn2.processor.to_k_custom_diffusion.weight' and to_v")
    embed_files = sorted(p for p in folder.iterdir()
                         if p.suffix in (".bin", ".safetensors") and p.name not in CD_WEIGHTS)
    if not embed_files:
        raise CdvideoError(f"{folder}: no token embedding file (<token>.bin or <token>.safetensors, as "
                           "train_custom_diffusion.py writes beside the weights); the new token is missing")
    tokens, rows = [], []
    for p in embed_files:
        t, r = read_embedding(p)
        tokens += t
        rows.append(r)
    return unet, tokens, torch.cat(rows)


def read_embedding(path: Path, token: str | None = None) -> tuple[list[str], torch.Tensor]:
    """(tokens, rows (N, D)) of a textual-inversion or A1111 embedding file."""
    data = read_tensors(path)
    if isinstance(data.get("string_to_param"), dict):  # AUTOMATIC1111 .pt
        params = list(data["string_to_param"].values())
        if len(params) != 1 or not isinstance(params[0], torch.Tensor):
            raise CdvideoError(f"{path}: an A1111 embedding holds one tensor in string_to_param, found {len(params)}")
        name, rows = token or str(data.get("name") or path.stem), params[0]
    elif "emb_params" in data:  # AUTOMATIC1111 / ComfyUI .safetensors
        name, rows = token or path.stem, data["emb_params"]
    else:
        tensors = {k: v for k, v in data.items() if isinstance(v, torch.Tensor)}
        if len(tensors) != 1:
            raise CdvideoError(f"{path}: expected one {{token: embedding}} entry, found keys "
                               f"{', '.join(list(data)[:5]) or 'none'}")
        name, rows = next(iter(tensors.items()))
        name = token or name
    rows = rows.detach().float()
    rows = rows[None] if rows.dim() == 1 else rows
    if rows.dim() != 2:
        raise CdvideoError(f"{path}: embedding of shape {tuple(rows.shape)}; expected (D,) or (vectors, D)")
    return vector_tokens(name, len(rows)), rows


def token_groups(tokens: list[str]) -> list[tuple[str, list[int]]]:
    """(name, indices) per embedding: a token and the `<token>_1` ... after it are one multi-vector embedding, as
    `read_embedding` names them and diffusers expands them in prompts."""
    groups: list[tuple[str, list[int]]] = []
    for i, token in enumerate(tokens):
        if groups and token == vector_tokens(groups[-1][0], len(groups[-1][1]) + 1)[-1]:
            groups[-1][1].append(i)
        else:
            groups.append((token, [i]))
    return groups


def write_custom_diffusion(folder: Path, unet: dict[str, torch.Tensor], tokens: list[str], rows: torch.Tensor,
                           metadata: dict[str, str]) -> list[Path]:
    """diffusers' two-file Custom Diffusion layout: `pytorch_custom_diffusion_weights.bin` as diffusers'
    `save_attn_procs` writes it (processor weights, and an empty entry for each self-attention processor, which
    diffusers 0.42's `load_attn_procs` needs to count the processors; safetensors cannot hold those entries), and
    one `<token>.safetensors` per token (a multi-vector token's rows in one, (n, D), as diffusers loads it)."""
    from safetensors.torch import save_file  # lazy: start-up time

    state: dict = {}
    for name, value in unet.items():
        layer, proj, param = re.match(r"^(.+\.attn2)\.(to_k|to_v|to_q|to_out\.0)\.(weight|bias)$", name).groups()
        proj = "to_out_custom_diffusion.0" if proj == "to_out.0" else f"{proj}_custom_diffusion"
        state[f"{layer}.processor.{proj}.{param}"] = value.detach().float().contiguous()
        state[f"{layer[:-1]}1.processor"] = {}
    torch.save(state, folder / CD_WEIGHTS[1])  # tensors and empty dicts only: readable with weights_only=True
    written = [folder / CD_WEIGHTS[1]]
    for token, idx in token_groups(tokens):  # the key holds the token; the file name is valid on every system
        row = rows[idx[0]] if len(idx) == 1 else rows[idx]  # (D,) as train_custom_diffusion.py writes one vector
        save_file({token: row.detach().float().contiguous()}, str(folder / f"{file_stem(token)}.safetensors"),
                  metadata={**metadata, "format": "pt"})
        written.append(folder / f"{file_stem(token)}.safetensors")
    return written


def write_a1111_embedding(path: Path, rows: torch.Tensor, metadata: dict[str, str]) -> Path:
    """An AUTOMATIC1111 / ComfyUI embedding file: `emb_params` (vectors, D)."""
    from safetensors.torch import save_file  # lazy: start-up time

    save_file({"emb_params": rows.detach().float().contiguous()}, str(path), metadata=metadata)
    return path
