"""Tokens and text features: adding concept tokens, prompt encoding, EOS features for SPL and drift."""

from __future__ import annotations

from typing import Literal, Sequence

import torch

from cdvideo.errors import CdvideoError

Pooling = Literal["eos", "official"]


def tokenize(tokenizer, prompts: Sequence[str], padding: str = "max_length") -> torch.Tensor:
    """Token ids padded to the model length, (B, 77); with padding='longest', to the longest prompt, (B, L)."""
    return tokenizer(
        list(prompts), padding=padding, max_length=tokenizer.model_max_length,
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
    """Final-layer-normed hidden state at the pooled position: (B, D). Shared by SPL and drift.

    CLIP's text encoder is causal, so a position's state depends only on the tokens up to it: the prompts are
    encoded up to the longest one's EOS, not through all 77 positions (the same features, a fraction of the cost).
    """
    ids = tokenize(tokenizer, prompts, padding="longest").to(text_encoder.device)
    hidden = text_encoder(ids).last_hidden_state  # (B, L, D), final layer norm applied
    idx = pool_index(ids, tokenizer, pooling)
    return hidden[torch.arange(len(ids), device=hidden.device), idx]


def encode_prompts(text_encoder, tokenizer, prompts: Sequence[str]) -> torch.Tensor:
    """UNet conditioning: (B, 77, D) last hidden states."""
    ids = tokenize(tokenizer, prompts).to(text_encoder.device)
    return text_encoder(ids).last_hidden_state


def encode_distinct(text_encoder, tokenizer, prompts: Sequence[str]) -> torch.Tensor:
    """encode_prompts through the encoder once per distinct prompt, rows repeated: (B, 77, D), same values and
    gradients (a batch of one concept repeats its prompt)."""
    distinct = list(dict.fromkeys(prompts))
    cond = encode_prompts(text_encoder, tokenizer, distinct)
    if len(distinct) == len(prompts):
        return cond
    return cond[torch.tensor([distinct.index(p) for p in prompts], device=cond.device)]


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


class SplicedEmbedding(torch.nn.Module):
    """A frozen token-embedding table whose rows for `ids` are read from a small trainable parameter `rows`
    (N, D) instead, so that optimizer, clipping and weight decay touch only those rows, not the whole table."""

    def __init__(self, table: torch.nn.Embedding, ids: Sequence[int]):
        super().__init__()
        self.table = table
        ids_t = torch.tensor(list(ids), dtype=torch.long, device=table.weight.device)
        slot = torch.full((table.num_embeddings,), -1, dtype=torch.long, device=table.weight.device)
        slot[ids_t] = torch.arange(len(ids_t), device=slot.device)
        self.register_buffer("slot", slot, persistent=False)  # token id -> row index, -1 for table rows
        self.rows = torch.nn.Parameter(table.weight.detach()[ids_t].clone().float())

    @property
    def weight(self) -> torch.Tensor:
        return self.table.weight

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        out = self.table(input_ids)  # (B, L, D)
        slot = self.slot[input_ids]  # (B, L)
        return torch.where((slot >= 0)[..., None], self.rows.to(out.dtype)[slot.clamp_min(0)], out)

    @torch.no_grad()
    def merged(self) -> torch.nn.Embedding:
        """The plain table with the trained rows written in."""
        ids = (self.slot >= 0).nonzero().squeeze(1)
        self.table.weight[ids] = self.rows[self.slot[ids]].to(self.table.weight.dtype)
        return self.table


def splice_token_rows(text_encoder, token_ids: Sequence[int]) -> SplicedEmbedding:
    """Freeze the text encoder's embedding table and train `token_ids`' rows as their own parameter."""
    table = text_encoder.get_input_embeddings()
    table.requires_grad_(False)
    spliced = SplicedEmbedding(table, token_ids)
    text_encoder.set_input_embeddings(spliced)
    return spliced


def unsplice(text_encoder) -> None:
    """Put the plain embedding table (with the trained rows) back into the text encoder."""
    emb = text_encoder.get_input_embeddings()
    if isinstance(emb, SplicedEmbedding):
        text_encoder.set_input_embeddings(emb.merged())
