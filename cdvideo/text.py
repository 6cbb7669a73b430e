"""Tokens and text features: adding concept tokens, prompt encoding, EOS features for SPL and drift."""

from __future__ import annotations

from typing import Literal, Sequence

import torch

from .errors import CdvideoError

Pooling = Literal["eos", "official"]


def tokenize(tokenizer, prompts: Sequence[str]) -> torch.Tensor:
    """Token ids padded to the model length: (B, 77)."""
    return tokenizer(
        list(prompts), padding="max_length", max_length=tokenizer.model_max_length,
        truncation=True, return_tensors="pt",
    ).input_ids


def eos_index(ids: torch.Tensor, eos_token_id: int) -> torch.Tensor:
    """Index of the first EOS token in each row of (B, L) ids: the true end of the prompt."""
    is_eos = ids == eos_token_id
    if not bool(is_eos.any(dim=-1).all()):
        raise ValueError("a prompt has no EOS token (was it truncated?)")
    return is_eos.int().argmax(dim=-1)


def official_index(ids: torch.Tensor) -> torch.Tensor:
    """argmax(token id) per row, as transformers pools when the config says eos_token_id=2.

    With an added token (id >= 49408) in the prompt this is the added token, not EOS; kept for ablations
    because the public ClassDiffusion code computes SPL from this `pooler_output`.
    """
    return ids.argmax(dim=-1)


def pool_index(ids: torch.Tensor, tokenizer, pooling: Pooling) -> torch.Tensor:
    if pooling == "eos":
        return eos_index(ids, tokenizer.eos_token_id)
    if pooling == "official":
        return official_index(ids)
    raise ValueError(f"unknown pooling {pooling!r}")


def eos_features(text_encoder, tokenizer, prompts: Sequence[str], pooling: Pooling = "eos") -> torch.Tensor:
    """Final-layer-normed hidden state at the pooled position: (B, D). Shared by SPL and drift."""
    ids = tokenize(tokenizer, prompts).to(text_encoder.device)
    hidden = text_encoder(ids).last_hidden_state  # (B, L, D), final layer norm applied
    idx = pool_index(ids, tokenizer, pooling)
    return hidden[torch.arange(len(ids), device=hidden.device), idx]


def encode_prompts(text_encoder, tokenizer, prompts: Sequence[str]) -> torch.Tensor:
    """UNet conditioning: (B, 77, D) last hidden states."""
    ids = tokenize(tokenizer, prompts).to(text_encoder.device)
    return text_encoder(ids).last_hidden_state


def add_tokens(tokenizer, text_encoder, tokens: Sequence[str], initializers: Sequence[str]) -> list[int]:
    """Add each token to the tokenizer, its embedding row set to the mean embedding of its initializer words."""
    for tok in tokens:
        if tok in tokenizer.get_added_vocab():
            raise CdvideoError(
                f"token {tok!r} is already an added token of this tokenizer; pick another token string"
            )
    n_base, ids = len(tokenizer), []
    for tok in tokens:
        if tokenizer.add_tokens(tok) != 1:
            raise CdvideoError(f"token {tok!r} could not be added to the tokenizer; pick another token string")
        ids.append(tokenizer.convert_tokens_to_ids(tok))
    text_encoder.resize_token_embeddings(len(tokenizer), mean_resizing=False)  # rows set below
    weight = text_encoder.get_input_embeddings().weight
    with torch.no_grad():
        for tid, init in zip(ids, initializers):
            init_ids = tokenizer(init, add_special_tokens=False).input_ids
            if not init_ids or any(i >= n_base for i in init_ids):
                raise CdvideoError(f"initializer {init!r} must be ordinary words of the base vocabulary")
            weight[tid] = weight[init_ids].mean(dim=0)
    return ids


def set_token_rows(tokenizer, text_encoder, tokens: Sequence[str], rows: torch.Tensor) -> list[int]:
    """Add `tokens` with the given embedding rows (N, D), as loaded from a weights file."""
    ids = add_tokens(tokenizer, text_encoder, tokens, ["a"] * len(tokens))
    weight = text_encoder.get_input_embeddings().weight
    with torch.no_grad():
        weight[ids] = rows.to(weight.dtype, copy=True).to(weight.device)
    return ids
