"""Merging separately trained concepts into one file (Custom Diffusion, Kumari et al. CVPR 2023, sec. 3.2).

For each cross-attention K/V matrix W (out x in), with W0 the base weight:
    minimise ||(W - W0) C_reg^T||_F  subject to  W C^T = V,
C_reg: text features of generic captions under the base model, C: features of each concept's captions,
V: each fine-tuned model's outputs on its own captions. Lagrange multipliers give, with M = C_reg^T C_reg,
    W = W0 + (V - W0 C^T) (C M^-1 C^T)^-1 C M^-1,
solved here with Cholesky factorisations in float64 (no explicit inverse). M gets a small ridge
(1e-5 of its mean diagonal): text features after the final LayerNorm can span less than the full width,
and a singular M would let the null directions blow up. The constraints still hold exactly.
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch

from . import weights
from .errors import CdvideoError
from .files import asset_text, text_lines

METHODS = ("constrained", "average")
RIDGE = 1e-5


def reg_captions() -> list[str]:
    """The bundled regularisation captions (a few hundred generic scenes)."""
    return text_lines(asset_text("reg_captions.txt"))


def _cholesky(a: torch.Tensor) -> torch.Tensor:
    """Cholesky factor with the smallest diagonal jitter that makes `a` positive definite."""
    scale = a.diagonal().mean().clamp_min(1e-30)
    for jitter in (0.0, 1e-12, 1e-10, 1e-8, 1e-6):
        factor, info = torch.linalg.cholesky_ex(a + jitter * scale * torch.eye(len(a), dtype=a.dtype))
        if info == 0:
            return factor
    raise CdvideoError("the composition constraints are degenerate (identical target captions?)")


def constraint_factors(gram_reg: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The layer-independent part of Eq. 4: A = M^-1 C^T (in, n) and the Cholesky factor of C M^-1 C^T (n, n).

    gram_reg: (in, in) = C_reg^T C_reg, with the ridge added here; c: (n, in). Float64.
    """
    m, c = gram_reg.double(), c.double()
    m = m + RIDGE * m.diagonal().mean() * torch.eye(len(m), dtype=m.dtype)
    a = torch.cholesky_solve(c.T, _cholesky(m))  # M^-1 C^T: (in, n)
    return a, _cholesky(c @ a)


def merge_with(w0: torch.Tensor, v: torch.Tensor, c: torch.Tensor, a: torch.Tensor,
               s_factor: torch.Tensor) -> torch.Tensor:
    """W = W0 + (V - W0 C^T) S^-1 A^T for one matrix, given `constraint_factors`. w0: (out, in), v: (out, n)."""
    w0 = w0.double()
    r = v.double() - w0 @ c.double().T  # (out, n)
    x = torch.cholesky_solve(r.T, s_factor).T  # R S^-1: (out, n)
    return w0 + x @ a.T


def constrained_merge(w0: torch.Tensor, gram_reg: torch.Tensor, c: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """argmin_W ||(W - W0) C_reg^T||_F s.t. W C^T = V (Kumari et al. 2023, Eq. 4); gram_reg = C_reg^T C_reg.

    w0: (out, in), gram_reg: (in, in), c: (n, in), v: (out, n). Computed in float64.
    """
    return merge_with(w0, v, c, *constraint_factors(gram_reg, c))


def average_merge(w0: torch.Tensor, tuned: list[torch.Tensor]) -> torch.Tensor:
    """W0 + mean of the fine-tuned deltas."""
    return w0 + torch.stack([t.double() - w0.double() for t in tuned]).mean(dim=0)


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
    from .text import tokenize

    rows = []
    for caption, tok in captions:
        ids = tokenize(tokenizer, [caption])
        hidden = text_encoder(ids.to(text_encoder.device)).last_hidden_state[0].double().cpu()
        start = int((ids[0] == tokenizer.convert_tokens_to_ids(tok)).nonzero()[0])
        end = int((ids[0] == tokenizer.eos_token_id).nonzero()[0])
        rows.append(hidden[start:end + 1])
    return torch.unique(torch.cat(rows), dim=0)


def compose_files(paths: list[str], output: str, method: str = "constrained", renames: list[str] = (),
                  model: str | None = None, overwrite: bool = False) -> Path:
    """`cdvideo compose`: load, check, merge against the base model and write one file."""
    from .models import load_components

    out = Path(output)
    if out.exists() and not overwrite:
        raise CdvideoError(f"{out} exists; choose another -o or pass --overwrite")
    from .interop.importer import load_any

    ws = [load_any(p) for p in paths]  # cdvideo files, Custom Diffusion folders, embeddings
    rename_tokens(ws, list(renames))
    check_composable(ws)
    m = load_components(model or ws[0].base_model or weights.DEFAULT_BASE)
    for w in ws:
        weights.validate(w, m["unet"], m["text_encoder"], m["tokenizer"], base_model=model, force=True)
    merged = compose(ws, m, method)
    dtype = ws[0].metadata.get("dtype", "float32")
    return weights.save(out, merged, dtype=dtype if dtype in weights.DTYPES else "float32")


@torch.no_grad()
def constraints(ws: list[weights.PersonalWeights], m: dict) -> tuple[list[torch.Tensor], tuple]:
    """Each file's target features (n_i, in), and (C, A, chol(S)) shared by every K/V matrix."""
    from .text import encode_prompts, set_token_rows

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
