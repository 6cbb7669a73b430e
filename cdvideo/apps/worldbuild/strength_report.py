"""Tables and figures of the SPL strength ablation (spl_strength.py) from its result rows: paired differences (same
instance, seed and strength; SPL minus no SPL) with bootstrap 95% intervals, per strength, tuning and held-out
instances apart; identity against composition per SPL weight; drift against strength."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from cdvideo.data.files import write_text_atomic
from cdvideo.math.metrics import bootstrap_ci

KINDS = ("background", "position", "property", "motion")
METRICS = ("composition", "identity", "drift", *(f"composition_{k}" for k in KINDS))
STRENGTH_ORDER = ("1e-3 x 120", "3e-3 x 120", "3e-3 x 240", "6e-3 x 240")


def arm(row: dict) -> str:
    return f"spl {row['spl']:g}" + (" official" if row.get("pooling") == "official" else "")


def paired(rows: list[dict], strength: str, treated: str, control: str = "spl 0", group=None) -> dict:
    """Per metric: (mean of treated - control over pairs, low, high, pairs), pairs matched on (instance, seed)."""
    sel = [r for r in rows if r.get("strength") == strength and (group is None or r["held_out"] == group)]
    by = {(r["instance"], r["seed"], arm(r)): r for r in sel}
    pairs = [(by[(i, s, treated)], by[(i, s, control)]) for (i, s, a) in by if a == control and (i, s, treated) in by]
    out = {"pairs": len(pairs)}
    for m in METRICS:
        out[m] = bootstrap_ci([t[m] - c[m] for t, c in pairs])
        out[f"{m}_arms"] = (float(np.mean([t[m] for t, _ in pairs])) if pairs else float("nan"),
                            float(np.mean([c[m] for _, c in pairs])) if pairs else float("nan"))
    return out


def fmt(ci: tuple) -> str:
    """`mean [low, high]`, starred when the 95% interval excludes 0."""
    mean, lo, hi = ci
    star = " *" if lo > 0 or hi < 0 else ""
    return f"{mean:+.3f} [{lo:+.3f}, {hi:+.3f}]{star}"


def summary(rows: list[dict]) -> dict:
    strengths = [s for s in STRENGTH_ORDER if any(r.get("strength") == s for r in rows)]
    arms = sorted({arm(r) for r in rows if "strength" in r})
    out = {"strengths": strengths, "paired": {}, "means": {}, "base": {}}
    for s in strengths:
        for group, name in ((None, "all"), (False, "tuning"), (True, "held out")):
            for treated in [a for a in arms if a != "spl 0"]:
                p = paired(rows, s, treated, group=group)
                if p["pairs"]:
                    out["paired"][f"{s} | {name} | {treated}"] = p
        for a in arms:
            sel = [r for r in rows if r.get("strength") == s and arm(r) == a]
            if sel:
                out["means"][f"{s} | {a}"] = {m: float(np.mean([r[m] for r in sel])) for m in METRICS} | {
                    "runs": len(sel)}
    base = [r for r in rows if r.get("setting") == "base"]
    out["base"] = {m: float(np.mean([r[m] for r in base])) for m in METRICS if m != "drift"} if base else {}
    return out


def table(s: dict) -> str:
    lines = ["| strength | instances | arm | pairs | composition | identity | drift | background | position | "
             "property | motion |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for key, p in s["paired"].items():
        strength, group, treated = key.split(" | ")
        cells = [fmt(p[m]) if p["pairs"] >= 3 else f"{p[m][0]:+.3f} (too few pairs)"
                 for m in ("composition", "identity", "drift")]
        cells += [f"{p[f'composition_{k}'][0]:+.2f}" for k in KINDS]
        lines.append(f"| {strength} | {group} | {treated} - spl 0 | {p['pairs']} | " + " | ".join(cells) + " |")
    lines += ["", "| strength | arm | runs | composition | identity | drift | background | position | property | "
              "motion |", "|---|---|---|---|---|---|---|---|---|---|"]
    for key, m in s["means"].items():
        strength, a = key.split(" | ")
        lines.append(f"| {strength} | {a} | {m['runs']} | {m['composition']:.3f} | {m['identity']:.3f} | "
                     f"{m['drift']:.3f} | " + " | ".join(f"{m[f'composition_{k}']:.2f}" for k in KINDS) + " |")
    if s["base"]:
        b = s["base"]
        lines.append(f"| base model, class word | - | 6 | {b['composition']:.3f} | {b['identity']:.3f} | - | "
                     + " | ".join(f"{b[f'composition_{k}']:.2f}" for k in KINDS) + " |")
    return "\n".join(lines) + "\n"


def plot(s: dict, path: Path) -> None:
    import matplotlib  # lazy: start-up time (only the figure needs it)

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # lazy: start-up time

    fig, (ax, bx) = plt.subplots(1, 2, figsize=(12, 5), dpi=110)
    arms = sorted({k.split(" | ")[1] for k in s["means"]})
    for a, colour in zip(arms, plt.get_cmap("tab10").colors):
        pts = [(st, s["means"][f"{st} | {a}"]) for st in s["strengths"] if f"{st} | {a}" in s["means"]]
        ax.plot([m["composition"] for _, m in pts], [m["identity"] for _, m in pts], "o-", color=colour, label=a)
        for st, m in pts:
            ax.annotate(st, (m["composition"], m["identity"]), fontsize=6, xytext=(3, 3), textcoords="offset points")
        bx.plot([st for st, _ in pts], [m["drift"] for _, m in pts], "o-", color=colour, label=a)
    if s["base"]:
        ax.scatter([s["base"]["composition"]], [s["base"]["identity"]], marker="*", s=150, color="black",
                   label="base model, class word")
    ax.set_xlabel("composition (mean of background, position, property, motion shown)")
    ax.set_ylabel("identity (judge: share of the instance's traits)")
    ax.set_title("the trade-off, one curve per SPL weight (points: strengths)")
    ax.legend(fontsize=7)
    bx.set_xlabel("fine-tuning strength (learning rate x steps)")
    bx.set_ylabel("drift (cosine distance of the token from its class)")
    bx.set_title("semantic drift against strength")
    bx.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_outputs(docs: Path, stem: str, s: dict, text: str, draw) -> None:
    """A study's summary into docs: <stem>.md (the tables), <stem>.json (the numbers), <stem>.png (`draw`)."""
    docs.mkdir(parents=True, exist_ok=True)
    write_text_atomic(docs / f"{stem}.md", text)
    write_text_atomic(docs / f"{stem}.json", json.dumps(s, indent=1) + "\n")
    draw(s, docs / f"{stem}.png")
    print(text)


def write_report(rows: list[dict], docs: Path) -> None:
    s = summary(rows)
    write_outputs(docs, "strength", s, table(s), plot)
