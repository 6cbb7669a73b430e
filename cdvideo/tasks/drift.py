"""`cdvideo drift`: where a personalized token sits among its class, before and after tuning (PNG + JSON)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml

from cdvideo.data import builtins, checkpoint, weights
from cdvideo.data.clips import write_sidecar
from cdvideo.data.files import asset_text, atomic_path, reserve_stem, text_lines
from cdvideo.data.foreign import load_any
from cdvideo.data.formats import is_custom_diffusion_folder, token_groups
from cdvideo.errors import CdvideoError
from cdvideo.math.drift import drift_figures
from cdvideo.models.loading import load_components
from cdvideo.models.text import add_tokens, eos_features

PLACEHOLDER = "<cdvideo-drift>"


@dataclass
class Source:
    label: str
    row: torch.Tensor  # (D,) trained embedding of the first concept's token
    token: str
    class_word: str
    initializer: str
    base_model: str | None


def load_source(path: str | Path) -> Source:
    """A weights file, or a training checkpoint folder (its run's config.yaml gives class and base)."""

    path = Path(path)
    if path.is_dir() and not is_custom_diffusion_folder(path):
        state = checkpoint.load(path) if (path / checkpoint.STATE_FILE).is_file() else None
        cfg_file = path.parent.parent / "config.yaml"
        if state is None or not cfg_file.is_file():
            raise CdvideoError(f"{path}: not a checkpoint folder of a cdvideo run (state.pt, ../../config.yaml)")
        cfg = yaml.safe_load(cfg_file.read_text())
        c = cfg["concepts"][0]
        tokens = state["tokens"]  # every token the run added, a token's extra vectors after it
        source = Source(f"{path.parent.parent.name} step {state['step']}", state["trainable"]["token_embeddings"][0],
                        c["token"], c["class_word"], c.get("initializer") or c["class_word"], cfg.get("model"))
    else:
        w = load_any(path)
        if not w.class_words[0]:
            raise CdvideoError(f"{path}: no class word recorded; import it with `cdvideo import ... --class-word dog`")
        tokens, inits = w.tokens, w.metadata.get("initializers") or w.class_words
        source = Source(path.stem if path.stem != "weights" else path.parent.name, w.embeddings[0], w.tokens[0],
                        w.class_words[0], inits[0], w.base_model)
    if len(token_groups(tokens)[0][1]) > 1:
        raise CdvideoError(f"{path}: token {source.token!r} has several embedding vectors; drift places a "
                           "single-vector token among its class")
    return source


@torch.no_grad()
def compute(sources: list[Source], adjectives: list[str], model: str | None = None) -> dict:
    """Features of the class phrases and of '<token> <class>' under each source's initial and trained row."""
    classes = {s.class_word for s in sources}
    if len(classes) > 1:
        raise CdvideoError(f"the runs personalize different classes ({', '.join(sorted(classes))}); "
                           "plot one class at a time")
    class_word = sources[0].class_word
    m = load_components(model or sources[0].base_model or weights.DEFAULT_BASE)
    tok, te = m["tokenizer"], m["text_encoder"]
    [tid] = add_tokens(tok, te, [PLACEHOLDER], [sources[0].initializer])
    emb = te.get_input_embeddings().weight
    phrases = [f"{adj} {class_word}" for adj in adjectives]
    class_feats = eos_features(te, tok, phrases)
    personal_phrase = f"{PLACEHOLDER} {class_word}"
    before = eos_features(te, tok, [personal_phrase])[0]
    after = []
    for s in sources:
        if s.row.shape != emb[tid].shape:
            raise CdvideoError(f"{s.label}: token row of width {s.row.shape[0]} does not fit this text encoder")
        emb[tid] = s.row.to(emb)
        after.append(eos_features(te, tok, [personal_phrase])[0])
    fig = drift_figures(class_feats, torch.stack([before, *after]))
    runs = [{"label": s.label, "token": s.token,
             "after": {"point": fig["personal_points"][i + 1], "distance": fig["personal_distances"][i + 1],
                       "percentile": fig["personal_percentiles"][i + 1]}} for i, s in enumerate(sources)]
    return {"class_word": class_word, "phrases": phrases, "class_points": fig["class_points"],
            "centroid": fig["centroid_point"], "class_distance_mean": fig["class_distance_mean"],
            "before": {"initializer": sources[0].initializer, "point": fig["personal_points"][0],
                       "distance": fig["personal_distances"][0], "percentile": fig["personal_percentiles"][0]},
            "runs": runs}


def plot(result: dict, path: Path) -> None:
    """Scatter: class cloud with labels, centroid, the token before tuning and after each run."""
    import matplotlib  # lazy: start-up time

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # lazy: start-up time

    fig, ax = plt.subplots(figsize=(8, 7), dpi=110)
    pts = torch.tensor(result["class_points"])
    ax.scatter(pts[:, 0], pts[:, 1], s=14, c="#9aa5b1", label=f"<adjective> {result['class_word']}")
    for (x, y), phrase in zip(pts.tolist(), result["phrases"]):
        ax.annotate(phrase.split(" ")[0], (x, y), fontsize=6, color="#6b7785", xytext=(2, 2),
                    textcoords="offset points")
    cx, cy = result["centroid"]
    ax.scatter([cx], [cy], marker="X", s=120, c="black", label="class centroid")
    bx, by = result["before"]["point"]
    ax.scatter([bx], [by], s=90, facecolors="none", edgecolors="#2563eb", linewidths=2,
               label=f"before tuning (d={result['before']['distance']:.3f})")
    colors = plt.get_cmap("tab10").colors
    for i, run in enumerate(result["runs"]):
        x, y = run["after"]["point"]
        ax.scatter([x], [y], s=90, color=colors[(i + 3) % 10],
                   label=f"{run['label']} (d={run['after']['distance']:.3f}, p{run['after']['percentile']:.0f})")
        ax.annotate("", (x, y), (bx, by), arrowprops={"arrowstyle": "->", "color": colors[(i + 3) % 10]})
    ax.set_title(f"Semantic drift of the personal token among '{result['class_word']}' phrases")
    ax.set_xlabel("PC 1")
    ax.set_ylabel("PC 2")
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def drift(paths: list[str], output: str, phrases_file: str | None = None, model: str | None = None) -> list[Path]:
    """`cdvideo drift`: compute, then write `<output>.png` and `<output>.json` (suffixed if taken)."""
    if not paths:
        raise CdvideoError("give at least one --weights file or checkpoint folder")
    sources = [load_source(p) for p in paths]
    base = model or sources[0].base_model
    b = builtins.get(base)
    adjectives = b.drift_phrases() if b and b.drift_phrases else text_lines(asset_text("adjectives.txt"))
    if phrases_file:
        if not Path(phrases_file).is_file():
            raise CdvideoError(f"phrases file {phrases_file} not found")
        adjectives = text_lines(Path(phrases_file).read_text())
        if len(adjectives) < 3:
            raise CdvideoError(f"{phrases_file}: needs at least 3 adjectives, one per line")
    result = compute(sources, adjectives, model)
    out = Path(output)
    folder = out.parent
    folder.mkdir(parents=True, exist_ok=True)
    stem = reserve_stem(folder, out.stem if out.suffix in (".png", ".json") else out.name, (".png", ".json"))
    try:
        plot(result, folder / f"{stem}.png")
        write_sidecar(folder / f"{stem}.json", json.loads(json.dumps(result)))
    except BaseException:
        (folder / f"{stem}.json").unlink(missing_ok=True)
        raise
    return [folder / f"{stem}.png", folder / f"{stem}.json"]
