"""Cost of one ClassDiffusion training step at real SD1.5 size (random weights, no download), side by side.

    python scripts/bench_train_step.py [--resolution 256] [--steps 2]

Each variant runs in its own process (so peak memory is its own): the full loss (MSE + SPL), MSE only
(SPL logged but not backpropagated), and the full loss with gradient checkpointing. The variants run in
turn, `--rounds` times, and the fastest round of each counts (a shared machine drifts). Prints seconds per
step and peak memory (GPU allocated, or CPU resident), with ratios to the full loss.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

VARIANTS = {"full (MSE + SPL)": [], "MSE only (spl.weight=0)": ["spl.weight=0"],
            "full + gradient checkpointing": ["gradient_checkpointing=true"]}


def sd15_components():
    """SD1.5-shaped UNet, VAE and CLIP ViT-L/14 text encoder with random weights, the real tokenizer."""
    import torch
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    from cdvideo import tiny

    torch.manual_seed(0)
    return {
        "tokenizer": CLIPTokenizer.from_pretrained(str(tiny.tokenizer_dir())),
        "unet": UNet2DConditionModel(cross_attention_dim=768, sample_size=64),
        "vae": AutoencoderKL(block_out_channels=(128, 256, 512, 512), layers_per_block=2, latent_channels=4,
                             down_block_types=["DownEncoderBlock2D"] * 4, up_block_types=["UpDecoderBlock2D"] * 4),
        "text_encoder": CLIPTextModel(CLIPTextConfig(
            vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
            num_attention_heads=12, max_position_embeddings=77, hidden_act="quick_gelu", eos_token_id=2)).eval(),
        "scheduler": DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012),
    }


def run_variant(overrides: list[str], resolution: int, steps: int) -> dict:
    import numpy as np
    import torch
    from accelerate import Accelerator

    from cdvideo.config import load_train_config
    from cdvideo.data import Concept, load_folder, sample_batch
    from cdvideo.text import add_tokens, eos_features
    from cdvideo.train import select_trainable, step_loss

    cfg = load_train_config(None, ["concepts.0.images=samples/dog", "concepts.0.class_word=dog",
                                   f"resolution={resolution}", *overrides])
    acc = Accelerator(cpu=not torch.cuda.is_available())
    m = sd15_components()
    add_tokens(m["tokenizer"], m["text_encoder"], ["sks"], ["dog"])
    _, kv, emb = select_trainable(cfg, m["vae"], m["unet"], m["text_encoder"], acc.device, torch.float32)
    opt = torch.optim.AdamW(kv + [emb], lr=2e-5, weight_decay=1e-2)
    with torch.no_grad():
        class_feats = eos_features(m["text_encoder"], m["tokenizer"], ["a photo of a dog"])
    models = {**m, "class_feats": class_feats, "personal": ["a photo of a sks dog"], "acc": acc}
    concepts = [Concept("sks", "dog", load_folder("samples/dog"), "photo of a sks dog")]
    times = []
    for step in range(steps + 1):  # the first step warms up
        rng = np.random.default_rng([0, step])
        batch = sample_batch(concepts, 2, step, rng, resolution, 8, True, True)
        start = time.perf_counter()
        loss, _ = step_loss(cfg, models, batch, torch.Generator(acc.device).manual_seed(step))
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    peak = (torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available()
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20)
    return {"seconds": sum(times[1:]) / steps, "peak_gib": peak}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resolution", type=int, default=256)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--variant", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.variant is not None:
        print(json.dumps(run_variant(json.loads(args.variant), args.resolution, args.steps)))
        return
    results: dict[str, dict] = {}
    for _ in range(args.rounds):
        for name, overrides in VARIANTS.items():
            out = subprocess.run([sys.executable, __file__, "--resolution", str(args.resolution), "--steps",
                                  str(args.steps), "--variant", json.dumps(overrides)],
                                 capture_output=True, text=True, check=True)
            r = json.loads(out.stdout.strip().splitlines()[-1])
            if name not in results or r["seconds"] < results[name]["seconds"]:
                results[name] = r
    base = results["full (MSE + SPL)"]
    print(f"SD1.5-shaped step, batch 2, {args.resolution} px, mean of {args.steps} steps after a warm-up, "
          f"best of {args.rounds} rounds")
    print(f"{'variant':34} {'s/step':>8} {'ratio':>6} {'peak GiB':>9} {'ratio':>6}")
    for name, r in results.items():
        print(f"{name:34} {r['seconds']:8.2f} {r['seconds'] / base['seconds']:6.2f} "
              f"{r['peak_gib']:9.2f} {r['peak_gib'] / base['peak_gib']:6.2f}")


if __name__ == "__main__":
    main()
