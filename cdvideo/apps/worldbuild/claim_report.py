"""Tables and figure of the four-arm study (claim.py) from its rows: paired differences between arms (same instance,
seed and strength) per prompt kind with bootstrap 95% intervals; each arm's share of the identity ceiling per
instance; identity against composition per arm."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from cdvideo.apps.worldbuild.strength_report import write_outputs
from cdvideo.math.metrics import bootstrap_ci
from cdvideo.toyworld.scoring import KINDS  # the prompt kinds every run is scored on
NOISE = "claim_noise.json"  # in --docs: written by --noise, cited by the report
SUBJECT_KINDS = tuple(k for k in KINDS if k != "property")  # whose words keep the subject as it is told
CONTRASTS = (("ClassDiffusion", "Custom Diffusion"), ("ClassDiffusion + prior", "Custom Diffusion + prior"),
             ("Custom Diffusion + prior", "Custom Diffusion"), ("ClassDiffusion + prior", "ClassDiffusion"))
METRICS = ("composition", "identity", "subject identity", *(f"composition_{k}" for k in KINDS))


def subject_identity(row: dict) -> float:
    """Mean identity over the kinds whose words keep the subject (comparable with the spelled-out ceiling)."""
    return float(np.mean([row[f"identity_{k}"] for k in SUBJECT_KINDS if f"identity_{k}" in row]))


def share(identity: float, base: float, ceiling: float) -> float:
    """The share of the way from the base model's identity to the spelled-out ceiling (issue 29 asks 0.8)."""
    return (identity - base) / max(ceiling - base, 1e-6)


def value(row: dict, metric: str) -> float:
    return subject_identity(row) if metric == "subject identity" else row[metric]


def paired(rows: list[dict], treated: tuple[str, str], control: tuple[str, str]) -> dict:
    """Per metric: (mean of treated - control, low, high), each a (strength, arm). Runs are paired on (instance,
    seed); an instance's pairs are averaged over its seeds and the interval resamples instances (seeds of one
    instance share it)."""
    by = {(r["strength"], r["arm"], r["instance"], r["seed"]): r for r in rows if "arm" in r}
    pairs = [(i, r, by[(*control, i, s)]) for (st, a, i, s), r in by.items() if (st, a) == treated
             and (*control, i, s) in by]
    instances = sorted({i for i, _, _ in pairs})

    def per_instance(m: str) -> list[float]:
        return [float(np.mean([value(t, m) - value(c, m) for j, t, c in pairs if j == i])) for i in instances]
    return {"pairs": len(pairs), "instances": len(instances), **{m: bootstrap_ci(per_instance(m)) for m in METRICS}}


def recovery(rows: list[dict], strength: str, arm: str) -> dict:
    """Per instance: subject identity, and its share of the way from the base model (class word) to the
    spelled-out ceiling; the issue asks 0.8."""
    ref = {(r["instance"], r["setting"]): r for r in rows if "setting" in r}
    out = {}
    for name in sorted({r["instance"] for r in rows if r.get("arm") == arm and r.get("strength") == strength}):
        runs = [subject_identity(r) for r in rows if (r.get("arm"), r.get("strength"), r["instance"]) ==
                (arm, strength, name)]
        if (name, "base") not in ref or (name, "spelled out") not in ref:
            continue
        base, ceiling = subject_identity(ref[(name, "base")]), subject_identity(ref[(name, "spelled out")])
        out[name] = {"identity": float(np.mean(runs)), "base": base, "ceiling": ceiling,
                     "share": share(float(np.mean(runs)), base, ceiling), "runs": len(runs)}
    return out


def kind_shares(rows: list[dict], strength: str, arm: str) -> dict:
    """Per prompt kind that keeps the subject's words: the share of the way from the base model's identity to the
    spelled-out one, of the means over the arm's runs and their instances' references (where the subject is lost)."""
    ref = {(r["instance"], r["setting"]): r for r in rows if "setting" in r}
    runs = [r for r in rows if (r.get("arm"), r.get("strength")) == (arm, strength)
            and (r["instance"], "base") in ref and (r["instance"], "spelled out") in ref]
    out = {}
    for k in SUBJECT_KINDS:
        if runs and all(f"identity_{k}" in r and f"identity_{k}" in ref[(r["instance"], "spelled out")] for r in runs):
            mean = {name: float(np.mean([(ref[(r["instance"], name)] if name else r)[f"identity_{k}"] for r in runs]))
                    for name in ("", "base", "spelled out")}
            out[k] = share(mean[""], mean["base"], mean["spelled out"])
    return out


def matched(means: dict) -> dict:
    """The paper's claim is about the trade-off: each SPL setting against the setting of its arm without SPL (any
    strength, the same prior preservation) whose mean subject identity is nearest. {label: (treated, control)}."""
    out = {}
    for treated, control in CONTRASTS[:2]:
        own = [k.split(" | ") for k in means if k.endswith(f" | {treated}")]
        other = [k.split(" | ")[0] for k in means if k.endswith(f" | {control}")]
        for strength, _ in own:
            if other:
                ident = means[f"{strength} | {treated}"]["subject identity"]
                near = min(other, key=lambda o: abs(means[f"{o} | {control}"]["subject identity"] - ident))
                out[f"{treated} {strength} - {control} {near}"] = ((strength, treated), (near, control))
    return out


def summary(rows: list[dict]) -> dict:
    strengths = sorted({r["strength"] for r in rows if "strength" in r}, key=lambda s: [float(x) for x in
                                                                                         s.split(" x ")][::-1])
    arms = list(dict.fromkeys(r["arm"] for r in rows if "arm" in r))
    out: dict = {"strengths": strengths, "paired": {}, "means": {}, "recovery": {}, "kind shares": {}}
    for s in strengths:
        for treated, control in CONTRASTS:
            p = paired(rows, (s, treated), (s, control))
            if p["pairs"]:
                out["paired"][f"{s} | {treated} - {control}"] = p
        for a in arms:
            sel = [r for r in rows if r.get("strength") == s and r.get("arm") == a]
            if sel:
                out["means"][f"{s} | {a}"] = {m: float(np.mean([value(r, m) for r in sel])) for m in METRICS}
                out["recovery"][f"{s} | {a}"] = recovery(rows, s, a)
                out["kind shares"][f"{s} | {a}"] = kind_shares(rows, s, a)
    out["matched"] = matched(out["means"])
    for key, (treated, control) in out["matched"].items():
        out["matched"][key] = paired(rows, treated, control)
    base = [r for r in rows if r.get("setting") == "base"]
    out["base"] = {m: float(np.mean([value(r, m) for r in base])) for m in METRICS} if base else {}
    ceiling = [subject_identity(r) for r in rows if r.get("setting") == "spelled out"]
    out["ceiling"] = float(np.mean(ceiling)) if ceiling else None
    return out


def fmt(ci) -> str:
    """`mean [low, high]`, starred when the 95% interval excludes 0."""
    mean, lo, hi = ci
    return f"{mean:+.3f} [{lo:+.3f}, {hi:+.3f}]" + (" *" if lo > 0 or hi < 0 else "")


def table(s: dict) -> str:
    head = ["strength", "contrast", "pairs (instances)", "composition", "subject identity", *KINDS]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for key, p in s["paired"].items():
        strength, contrast = key.split(" | ")
        cells = [fmt(p["composition"]), fmt(p["subject identity"]), *(fmt(p[f"composition_{k}"]) for k in KINDS)]
        lines.append(f"| {strength} | {contrast} | {p['pairs']} ({p['instances']}) | " + " | ".join(cells) + " |")
    lines += ["", "At about the same identity (each SPL setting against the setting without SPL whose mean identity "
              "is nearest):", "", "| contrast | pairs (instances) | composition | subject identity |",
              "|---|---|---|---|"]
    for key, p in s["matched"].items():
        lines.append(f"| {key} | {p['pairs']} ({p['instances']}) | {fmt(p['composition'])} | "
                     f"{fmt(p['subject identity'])} |")
    head = ["strength", "arm", "composition", "subject identity", "share of the ceiling (per instance)"]
    lines += ["", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for key, m in s["means"].items():
        strength, arm = key.split(" | ")
        shares = ", ".join(f"{n} {v['share']:.2f}" for n, v in s["recovery"][key].items())
        lines.append(f"| {strength} | {arm} | {m['composition']:.3f} | {m['subject identity']:.3f} | {shares} |")
    if s["base"]:
        lines.append(f"| - | base model, class word | {s['base']['composition']:.3f} | "
                     f"{s['base']['subject identity']:.3f} | 0 |")
    if s["ceiling"] is not None:
        lines.append(f"| - | spelled out (the ceiling) | - | {s['ceiling']:.3f} | 1 |")
    lines += ["", "Share of the ceiling per prompt kind (of the means over runs; where the subject is lost):", "",
              "| strength | arm | " + " | ".join(SUBJECT_KINDS) + " |", "|" + "---|" * (2 + len(SUBJECT_KINDS))]
    for key, shares in s["kind shares"].items():
        lines.append(f"| {' | '.join(key.split(' | '))} | "
                     + " | ".join(f"{shares[k]:.2f}" if k in shares else "-" for k in SUBJECT_KINDS) + " |")
    return "\n".join(lines) + "\n"


def plot(s: dict, path: Path) -> None:
    import matplotlib  # lazy: start-up time (only the figure needs it)

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # lazy: start-up time

    fig, ax = plt.subplots(figsize=(7, 5), dpi=110)
    arms = list(dict.fromkeys(k.split(" | ")[1] for k in s["means"]))
    for a, colour in zip(arms, plt.get_cmap("tab10").colors):
        pts = [(st, s["means"][f"{st} | {a}"]) for st in s["strengths"] if f"{st} | {a}" in s["means"]]
        ax.plot([m["composition"] for _, m in pts], [m["subject identity"] for _, m in pts], "o-", color=colour,
                label=a)
        for st, m in pts:
            ax.annotate(st, (m["composition"], m["subject identity"]), fontsize=6, xytext=(3, 3),
                        textcoords="offset points")
    if s["base"]:
        ax.scatter([s["base"]["composition"]], [s["base"]["subject identity"]], marker="*", s=150, color="black",
                   label="base model, class word")
    if s["ceiling"] is not None:
        ax.axhline(s["ceiling"], color="gray", linestyle="--", label="spelled out (the ceiling)")
    ax.set_xlabel("composition (mean over prompt kinds of the share showing what was asked)")
    ax.set_ylabel("identity (judge: share of the instance's traits)")
    ax.set_title("identity against composition, one curve per arm (points: strengths)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def noise_line(docs: Path) -> str:
    """The scorer's own noise (--noise), one line under the tables; empty until it is measured."""
    if not (docs / NOISE).exists():
        return ""
    n = json.loads((docs / NOISE).read_text())
    m = n["metrics"]
    kinds = ", ".join(f"{k} {m[f'composition_{k}']['sd']:.3f}" for k in KINDS)
    return (f"\nThe scorer's own noise ({n['run']}, scored {n['repeats']} times with other render seeds; sd of one "
            f"run's reading): identity {m['identity']['sd']:.3f}, composition {m['composition']['sd']:.3f} "
            f"({kinds}).\n")


def write_report(rows: list[dict], docs: Path) -> None:
    s = summary(rows)
    write_outputs(docs, "claim", s, table(s) + noise_line(docs), plot)
