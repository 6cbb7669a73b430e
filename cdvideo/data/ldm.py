"""diffusers -> original Stable Diffusion (LDM) parameter names, for one-file checkpoints that AUTOMATIC1111,
ComfyUI and diffusers' own `from_single_file` read. The block arithmetic follows the LDM UNet: input block
1 + b (L + 1) + l holds down block b's layer l (L = layers_per_block), its last slot the downsampler; output
block b (L + 1) + l holds up block b's layer l; the VAE decoder's levels are numbered from the bottom."""

from __future__ import annotations

import torch

UNET_TOP = {"time_embedding.linear_1": "time_embed.0", "time_embedding.linear_2": "time_embed.2",
            "conv_in": "input_blocks.0.0", "conv_norm_out": "out.0", "conv_out": "out.2"}
UNET_RESNET = {"norm1": "in_layers.0", "conv1": "in_layers.2", "norm2": "out_layers.0", "conv2": "out_layers.3",
               "time_emb_proj": "emb_layers.1", "conv_shortcut": "skip_connection"}
VAE_ATTENTION = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}
PREFIX = {"unet": "model.diffusion_model.", "vae": "first_stage_model.", "text": "cond_stage_model.transformer."}


def _split(key: str, n: int) -> tuple[list[str], str]:
    parts = key.split(".")
    return parts[:n], ".".join(parts[n:])


def unet_key(key: str, layers_per_block: int, up_has_attention: list[bool]) -> str:
    """One diffusers UNet2DConditionModel parameter name in the LDM layout."""
    for old, new in UNET_TOP.items():
        if key.startswith(old + "."):
            return new + key[len(old):]
    if key.startswith("mid_block."):
        (_, kind, idx), rest = _split(key, 3)
        return f"middle_block.{2 * int(idx)}.{_resnet(rest)}" if kind == "resnets" else f"middle_block.1.{rest}"
    (group, block, kind, layer), rest = _split(key, 4)
    b, i, lp = int(block), int(layer), layers_per_block + 1
    if group == "down_blocks":
        if kind == "resnets":
            return f"input_blocks.{1 + b * lp + i}.0.{_resnet(rest)}"
        if kind == "attentions":
            return f"input_blocks.{1 + b * lp + i}.1.{rest}"
        if kind == "downsamplers":  # down_blocks.b.downsamplers.0.conv.weight: `layer` is 0, rest is conv.*
            return f"input_blocks.{1 + b * lp + layers_per_block}.0.op.{rest.split('.', 1)[1]}"
    if group == "up_blocks":
        if kind == "resnets":
            return f"output_blocks.{b * lp + i}.0.{_resnet(rest)}"
        if kind == "attentions":
            return f"output_blocks.{b * lp + i}.1.{rest}"
        if kind == "upsamplers":
            slot = 2 if up_has_attention[b] else 1  # up_blocks.b.upsamplers.0.conv.*: rest is conv.*
            return f"output_blocks.{b * lp + layers_per_block}.{slot}.{rest}"
    raise KeyError(f"no LDM name for UNet parameter {key}")


def _resnet(rest: str) -> str:
    head, _, tail = rest.partition(".")
    return f"{UNET_RESNET.get(head, head)}.{tail}"


def vae_key(key: str, num_levels: int) -> tuple[str, bool]:
    """One diffusers AutoencoderKL parameter name in the LDM layout; True if it is a mid-block attention weight
    (a linear layer in diffusers, a 1x1 convolution in LDM)."""
    side, _, rest = key.partition(".")
    if side not in ("encoder", "decoder"):
        return key, False  # quant_conv, post_quant_conv
    if rest.startswith("conv_norm_out."):
        return f"{side}.norm_out.{rest.split('.', 1)[1]}", False
    if rest.startswith("mid_block."):
        (_, kind, idx), tail = _split(rest, 3)
        if kind == "resnets":
            return f"{side}.mid.block_{int(idx) + 1}.{tail.replace('conv_shortcut', 'nin_shortcut')}", False
        head, _, param = tail.rpartition(".")
        return f"{side}.mid.attn_1.{VAE_ATTENTION[head]}.{param}", head != "group_norm"
    if rest.startswith(("down_blocks.", "up_blocks.")):
        (group, level, kind), tail = _split(rest, 3)
        lvl = int(level) if group == "down_blocks" else num_levels - 1 - int(level)
        name = "down" if group == "down_blocks" else "up"
        if kind == "resnets":
            j, _, tail = tail.partition(".")
            return f"{side}.{name}.{lvl}.block.{j}.{tail.replace('conv_shortcut', 'nin_shortcut')}", False
        sampler = "downsample" if group == "down_blocks" else "upsample"
        return f"{side}.{name}.{lvl}.{sampler}.{tail.split('.', 1)[1]}", False
    return key, False  # conv_in, conv_out


def to_ldm(unet, vae, text_encoder) -> dict[str, torch.Tensor]:
    """The three models' parameters as one original-layout Stable Diffusion state dict."""
    cfg = unet.config
    up_attention = ["CrossAttn" in t for t in cfg.up_block_types]
    out = {PREFIX["unet"] + unet_key(k, cfg.layers_per_block, up_attention): v for k, v in unet.state_dict().items()}
    levels = len(vae.config.block_out_channels)
    for k, v in vae.state_dict().items():
        name, attention = vae_key(k, levels)
        out[PREFIX["vae"] + name] = v[:, :, None, None] if attention and v.dim() == 2 else v
    for k, v in text_encoder.state_dict().items():
        out[PREFIX["text"] + "text_model." + k.removeprefix("text_model.")] = v
    return {k: v.detach().contiguous() for k, v in out.items()}
