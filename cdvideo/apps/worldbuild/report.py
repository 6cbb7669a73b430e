"""Stage 7: measure the shipped miniature model as a user loads it (`model: toyworld` through cdvideo's loaders)
and write the figures and numbers of docs/toyworld.md into docs/toyworld/: renders of the world, the instances,
the text space, generated images and clips scored by the judge, training curves."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from cdvideo.apps.worldbuild.common import log
from cdvideo.models.loading import load_components
from cdvideo.models.text import eos_features
from cdvideo.pipelines.build import image_pipeline, video_pipeline
from cdvideo.pipelines.registry import load_adapter, make_scheduler
from cdvideo.toyworld import MODEL_ID, draw, instances, scoring, world
from cdvideo.toyworld import judge as J

GUIDANCE = (1.0, 3.0, 5.0, 7.5)
SEEDS = (0, 1)


def grid(images: list[np.ndarray], cols: int, scale: int = 2) -> Image.Image:
    rows = -(-len(images) // cols)
    h, w = images[0].shape[:2]
    out = np.zeros((rows * h, cols * w, 3), np.uint8)
    for i, im in enumerate(images):
        out[(i // cols) * h:(i // cols + 1) * h, (i % cols) * w:(i % cols + 1) * w] = im
    return Image.fromarray(out).resize((cols * w * scale, rows * h * scale), Image.Resampling.NEAREST)


def world_figures(seed: int, docs: Path) -> None:
    rng = np.random.default_rng(seed + 1000)
    scenes = [world.sample_scene(rng) for _ in range(32)]
    grid([draw.render(s)[0] for s in scenes], 8).save(docs / "world.png")
    photos = [draw.render(s)[0] for inst in instances.INSTANCES.values() for s in instances.photo_scenes(inst)]
    grid(photos, instances.PHOTOS).save(docs / "instances.png")
    clips = [draw.render(world.with_motion(world.sample_scene(rng), rng, m)) for m in ("right", "up", "growing")]
    grid([f for c in clips for f in c[::3]], 6).save(docs / "world_clips.png")


@torch.no_grad()
def text_space(m: dict, seed: int, docs: Path) -> dict:
    """How the text encoder's EOS features organise the world: nearest-centroid accuracy of class, colour and
    background on held-out captions, and a PCA figure of '<colour> <class>' phrases."""
    rng = np.random.default_rng(seed + 2000)
    scenes = [world.sample_scene(rng) for _ in range(800)]
    texts = [world.describe(s, rng, keep=1.0)[0] for s in scenes]
    f = torch.nn.functional.normalize(eos_features(m["text_encoder"], m["tokenizer"], texts), dim=-1)
    out = {}
    for attr in ("cls", "colour", "background", "position"):
        labels = np.array([getattr(s, attr) for s in scenes])
        train, test = np.arange(400), np.arange(400, 800)
        names = sorted(set(labels))
        centroids = torch.stack([f[train][torch.from_numpy(labels[train] == n)].mean(0) for n in names])
        pred = np.array(names)[(f[test] @ centroids.T).argmax(1).numpy()]
        out[f"nearest_centroid_{attr}"] = float((pred == labels[test]).mean())
    phrases = [(c, k) for k in world.CLASSES for c in world.COLOURS]
    g = torch.nn.functional.normalize(eos_features(m["text_encoder"], m["tokenizer"],
                                                  [f"a photo of a {c} {k}" for c, k in phrases]), dim=-1).double()
    cls = np.array([k for _, k in phrases])
    sim = (g @ g.T).numpy()
    same = cls[:, None] == cls[None]
    np.fill_diagonal(same, False)
    out["cos_same_class"] = float(sim[same].mean())
    out["cos_other_class"] = float(sim[cls[:, None] != cls[None]].mean())
    plot_pca(g, cls, [c for c, _ in phrases], docs)
    return out


def plot_pca(feats: torch.Tensor, classes: np.ndarray, colours: list[str], docs: Path) -> None:
    import matplotlib  # lazy: start-up time

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # lazy: start-up time

    x = feats - feats.mean(0)
    _, _, vh = torch.linalg.svd(x, full_matrices=False)
    p = (x @ vh[:2].T).numpy()
    fig, ax = plt.subplots(figsize=(7, 6), dpi=110)
    for i, k in enumerate(world.CLASSES):
        sel = classes == k
        ax.scatter(p[sel, 0], p[sel, 1], s=40, c=[np.array(world.COLOURS[c]) / 255 for c, s in zip(colours, sel) if s],
                   marker="os^vD<>p"[i], edgecolors="black", linewidths=0.6, label=k)
    ax.set_title("Text encoder: EOS features of 'a photo of a <colour> <class>' (PCA)")
    ax.legend(fontsize=8, title="class (marker); colour = fill")
    fig.tight_layout()
    fig.savefig(docs / "text_space.png")
    plt.close(fig)


@torch.no_grad()
def images(m: dict, judge: J.Judge, docs: Path) -> dict:
    """The fixed image prompts at several guidance scales, two seeds each; the judge's rates per attribute."""
    pipe = image_pipeline(m, scheduler=make_scheduler("ddim", m["scheduler"].config, animatediff=False))
    prompts = [p for s in SEEDS for p in scoring.image_prompts(48)]
    out, shown = {}, None
    for g in GUIDANCE:
        imgs = []
        for s in SEEDS:
            batch = scoring.image_prompts(48)
            imgs += pipe([p.text for p in batch], num_inference_steps=25, guidance_scale=g,
                         generator=torch.Generator().manual_seed(s)).images
        res = scoring.score(judge, [[im] for im in imgs], prompts)
        out[str(g)] = res.honoured
        log(f"images, guidance {g}: " + ", ".join(f"{k} {v:.2f}" for k, v in res.honoured.items()))
        if g == 5.0:
            shown = imgs[:48]
    grid([np.asarray(im) for im in shown], 8).save(docs / "samples.png")
    (docs / "samples_prompts.txt").write_text("\n".join(p.text for p in scoring.image_prompts(48)) + "\n")
    return out


@torch.no_grad()
def clips(m: dict, judge: J.Judge, docs: Path) -> dict:
    """The fixed clip prompts through AnimateDiff with the shipped adapter; the judge's rates, and GIFs."""
    from diffusers.utils import export_to_gif  # lazy: start-up time

    pipe = video_pipeline(m, load_adapter(MODEL_ID, torch.float32),
                          make_scheduler("ddim", m["scheduler"].config, animatediff=True))
    pipe.set_progress_bar_config(disable=True)
    prompts = scoring.clip_prompts(24)
    samples = []
    for p in prompts:
        frames = pipe(p.text, num_frames=16, num_inference_steps=25, guidance_scale=5.0,
                      generator=torch.Generator().manual_seed(p.seed), output_type="pil").frames[0]
        samples.append(frames)
    res = scoring.score(judge, samples, prompts)
    log("clips: " + ", ".join(f"{k} {v:.2f}" for k, v in res.honoured.items()))
    by_motion: dict[str, list] = {}  # prompted motion -> what the judge read in each of its clips
    for p, found in zip(prompts, res.found):
        by_motion.setdefault(p.asked["motion"], []).append(found["motion"])
    log("motion read: " + "; ".join(f"{m}: {', '.join(map(str, r))}" for m, r in by_motion.items()))
    for k, (p, frames) in enumerate(zip(prompts[:6], samples[:6])):
        big = [f.resize((256, 256), Image.Resampling.NEAREST) for f in frames]
        export_to_gif(big, str(docs / f"clip_{k}_{p.asked['motion']}.gif"), fps=8)
    grid([np.asarray(f) for frames in samples[:6] for f in frames[::3]], 6).save(docs / "clips.png")
    return {"honoured": res.honoured, "motion_read": by_motion, "prompts": [p.text for p in prompts[:6]]}


@torch.no_grad()
def drawn(m: dict, judge: J.Judge, n: int = 16, n_clips: int = 4) -> dict:
    """What the shipped model draws when told: each instance spelled out on n stills and n_clips clips (its
    identity, the ceiling of any personalization, and each trait's share), accessories and second objects."""
    from cdvideo.apps.worldbuild.drawing import clip_readings, draw, spelled_out  # lazy: start-up time

    pipe = image_pipeline(m, scheduler=make_scheduler("ddim", m["scheduler"].config, animatediff=False))
    pipe.set_progress_bar_config(disable=True)
    vpipe = video_pipeline(m, load_adapter(MODEL_ID, torch.float32),
                           make_scheduler("ddim", m["scheduler"].config, animatediff=True))
    vpipe.set_progress_bar_config(disable=True)
    out: dict = {"spelled_out": {}, "spelled_out_traits": {}, "spelled_out_clips": {}}
    for name, inst in instances.INSTANCES.items():
        ids, out["spelled_out_traits"][name] = spelled_out(judge, pipe, inst, n, 5.0, 25)
        out["spelled_out"][name] = float(np.mean(ids))
        clips = clip_readings(judge, vpipe, inst, n_clips, 5.0, 25)
        out["spelled_out_clips"][name] = float(np.mean([identity for identity, _ in clips]))
        log(f"{name} spelled out: stills {out['spelled_out'][name]:.3f}, clips {out['spelled_out_clips'][name]:.3f}")
    for kind, prompts in (("accessory", scoring.accessory_prompts(24)), ("companion", scoring.companion_prompts(24))):
        out[kind] = scoring.score(judge, draw(pipe, prompts, 5.0, 25), prompts).honoured
        log(f"{kind}: " + ", ".join(f"{k} {v:.2f}" for k, v in out[kind].items()))
    return out


def curves(work: Path, docs: Path) -> None:
    import matplotlib  # lazy: start-up time

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # lazy: start-up time

    names = [n for n in ("judge", "text", "vae", "unet", "motion") if (work / "curves" / f"{n}.json").is_file()]
    fig, axes = plt.subplots(1, len(names), figsize=(4 * len(names), 3.2), dpi=100)
    for ax, name in zip(np.atleast_1d(axes), names):
        rows = json.loads((work / "curves" / f"{name}.json").read_text())
        for key in [k for k in rows[0] if k != "step"]:
            pts = [(r["step"], r[key]) for r in rows if key in r and r["step"] < 10_000]
            if pts:
                ax.plot(*zip(*pts), label=key)
        ax.set_title(name)
        ax.set_xlabel("step")
        ax.set_yscale("log")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(docs / "curves.png")
    plt.close(fig)


def run(work: Path, seed: int, docs: Path) -> dict:
    """Every figure and number into `docs`, and results.json."""
    docs.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    world_figures(seed, docs)
    judge = J.load()
    m = load_components(MODEL_ID)  # exactly as `model: toyworld` loads it
    stages = {n: json.loads((work / f"{n}.done").read_text()) for n in ("judge", "text", "vae", "unet", "motion")
              if (work / f"{n}.done").is_file()}
    results = {"stages": stages, "text_space": text_space(m, seed, docs), "images": images(m, judge, docs),
               "clips": clips(m, judge, docs), "drawn": drawn(m, judge)}
    curves(work, docs)
    (docs / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    log(f"report written to {docs} in {time.time() - t0:.0f} s")
    return results
