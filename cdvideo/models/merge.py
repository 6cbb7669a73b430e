"""Merging separately trained concepts against a base model's text encoder: the closed form of Custom Diffusion
(Kumari et al., CVPR 2023, sec. 3.2; the math in `cdvideo.math.compose`) or the plain average of the K/V, after the
token renames and checks that make the files composable."""

from __future__ import annotations

import copy
from pathlib import Path

import torch

from cdvideo.data import weights
from cdvideo.data.files import asset_text, text_lines
from cdvideo.data.formats import token_groups
from cdvideo.errors import CdvideoError
from cdvideo.math.compose import average_merge, constraint_factors, merge_with
from cdvideo.models.text import encode_prompts, set_token_rows, tokenize

METHODS = ("constrained", "average")


def reg_captions() -> list[str]:
    """The bundled regularisation captions (a few hundred generic scenes)."""
    return text_lines(asset_text("reg_captions.txt"))


def rename_tokens(ws: list[weights.PersonalWeights], renames: list[str]) -> None:
    """Apply `--rename FILE:old=new` (FILE = file stem or 1-based position) in place."""
    for spec in renames:
        try:
            which, pair = spec.split(":", 1)
            old, new = pair.split("=", 1)
        except ValueError:
            raise CdvideoError(f"--rename {spec!r}: write FILE:old=new, e.g. b:sks=zwx") from None
        hits = [w for i, w in enumerate(ws) if which in (str(i + 1), w.path.stem if w.path else None)]
        if len(hits) != 1 or old not in hits[0].tokens:
            raise CdvideoError(f"--rename {spec!r}: no file {which!r} with token {old!r}")
        hits[0].tokens[hits[0].tokens.index(old)] = new


def check_composable(ws: list[weights.PersonalWeights]) -> None:
    if len(ws) < 2:
        raise CdvideoError("compose needs at least two weights files")
    bases = {w.base_model for w in ws}
    if len(bases) > 1:
        raise CdvideoError(f"the files were trained on different bases ({', '.join(map(str, sorted(bases)))}); "
                           "compose files of one base")
    seen: dict[str, Path | None] = {}
    for w in ws:
        several = [name for name, idx in token_groups(w.tokens) if len(idx) > 1]
        if several:
            raise CdvideoError(f"{w.path}: token {several[0]!r} has several embedding vectors; compose merges "
                               "single-vector tokens (train with concepts[].vectors: 1)")
        for tok in w.tokens:
            if tok in seen:
                raise CdvideoError(f"token {tok!r} is in both {seen[tok]} and {w.path}; rename one, e.g. "
                                   f"--rename {w.path.stem if w.path else 2}:{tok}=zwx")
            seen[tok] = w.path


def _captions(w: weights.PersonalWeights) -> list[tuple[str, str]]:
    """(caption, token) pairs that pin down a concept: its training and SPL phrases."""
    cfg = w.metadata.get("config")
    cfg = cfg if isinstance(cfg, dict) else {}  # a composed file keeps a list of configs
    templates = {cfg.get("instance_template", "photo of a {token} {class_word}"),
                 (cfg.get("spl") or {}).get("personal_template", "a photo of a {token} {class_word}")}
    return [(t.format(token=tok, class_word=cls), tok) for tok, cls in zip(w.tokens, w.class_words)
            for t in sorted(templates)]


@torch.no_grad()
def _target_features(tokenizer, text_encoder, captions: list[tuple[str, str]]) -> torch.Tensor:
    """Features from each caption's personal token through its EOS: (n, in), duplicates removed."""
    rows = []
    for caption, tok in captions:
        ids = tokenize(tokenizer, [caption])
        hidden = text_encoder(ids.to(text_encoder.device)).last_hidden_state[0].double().cpu()
        start = int((ids[0] == tokenizer.convert_tokens_to_ids(tok)).nonzero()[0])
        end = int((ids[0] == tokenizer.eos_token_id).nonzero()[0])
        rows.append(hidden[start:end + 1])
    return torch.unique(torch.cat(rows), dim=0)


@torch.no_grad()
def constraints(ws: list[weights.PersonalWeights], m: dict) -> tuple[list[torch.Tensor], tuple]:
    """Each file's target features (n_i, in), and (C, A, chol(S)) shared by every K/V matrix."""
    tokenizer, text_encoder = copy.deepcopy(m["tokenizer"]), copy.deepcopy(m["text_encoder"]).float()
    reg = encode_prompts(text_encoder, tokenizer, reg_captions()).double().flatten(0, 1).cpu()  # (N*77, in)
    for w in ws:
        set_token_rows(tokenizer, text_encoder, w.tokens, w.embeddings)
    feats = [_target_features(tokenizer, text_encoder, _captions(w)) for w in ws]
    c = torch.cat(feats)  # (n, in)
    return feats, (c, *constraint_factors(reg.T @ reg, c))


@torch.no_grad()
def compose(ws: list[weights.PersonalWeights], m: dict, method: str = "constrained") -> weights.PersonalWeights:
    """Merge single-concept files into one multi-concept file for base components `m` (left unchanged)."""
    check_composable(ws)
    if method not in METHODS:
        raise CdvideoError(f"--method {method}: choose from {', '.join(METHODS)}")
    base = dict(m["unet"].named_parameters())
    if method == "constrained":
        feats, solved = constraints(ws, m)

    merged = {}
    for name in sorted(set().union(*(w.unet for w in ws))):
        w0 = base[name].detach().double().cpu()
        tuned = [w.unet[name].double() if name in w.unet else w0 for w in ws]
        if method == "average" or not ("attn2.to_k." in name or "attn2.to_v." in name) or name.endswith("bias"):
            merged[name] = average_merge(w0, tuned).float()  # to_q/to_out do not see text features
            continue
        v = torch.cat([t @ f.T for t, f in zip(tuned, feats)], dim=1)  # (out, n)
        merged[name] = merge_with(w0, v, *solved).float()
    meta = {"base_model": ws[0].base_model, "base_revision": ws[0].metadata.get("base_revision", ""),
            "composed_from": [{"path": str(w.path), "tokens": w.tokens} for w in ws], "compose_method": method,
            "config": [w.metadata.get("config") for w in ws]}
    return weights.PersonalWeights(unet=merged, tokens=[t for w in ws for t in w.tokens],
                                   class_words=[c for w in ws for c in w.class_words],
                                   embeddings=torch.cat([w.embeddings for w in ws]), metadata=meta)
