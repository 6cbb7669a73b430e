"""Imports and exports, each proven with the other side's own loader (tiny models)."""

import json
import os
import pickle

import numpy as np
import torch
from safetensors.torch import load_file

from cdvideo.apps.cli import main
from cdvideo.data import weights
from cdvideo.models import architectures as tiny
from cdvideo.models.single_file import config_folder
from cdvideo.pipelines.build import image_pipeline
from cdvideo.pipelines.personalized import load_personalized
from cdvideo.pipelines.registry import make_scheduler
from cdvideo.tasks.importer import import_weights

PROMPT = "a photo of a sks dog"


def render(pipe, prompt=PROMPT, seed=3):
    pipe.set_progress_bar_config(disable=True)
    return np.asarray(pipe(prompt, num_inference_steps=3, guidance_scale=5.0, height=64, width=64,
                           generator=torch.Generator().manual_seed(seed), output_type="np").images[0])


def cdvideo_image(weights_file, model="tiny", **kw):
    m, _, _ = load_personalized(model, [str(weights_file)], **kw)
    return render(image_pipeline(m, scheduler=make_scheduler("ddim", m["scheduler"].config, False)))


def diffusers_pipe(m=None):
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    m = m or tiny.build_components()
    return StableDiffusionPipeline(vae=m["vae"], text_encoder=m["text_encoder"], tokenizer=m["tokenizer"],
                                   unet=m["unet"], scheduler=DDIMScheduler.from_config(m["scheduler"].config),
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)


def test_diffusers_layout_round_trips_and_diffusers_loads_it(tmp_path, perturbed_weights):
    out = tmp_path / "cd"
    assert main(["export", str(perturbed_weights), "--format", "diffusers", "-o", str(out)]) == 0
    back = import_weights(str(out), str(tmp_path / "back.safetensors"), "tiny", class_word="dog")
    a, b = weights.load(perturbed_weights), weights.load(back)
    assert a.tokens == b.tokens and torch.equal(a.embeddings, b.embeddings)
    assert a.unet.keys() == b.unet.keys() and all(torch.equal(a.unet[k], b.unet[k]) for k in a.unet)

    pipe = diffusers_pipe()  # diffusers' own Custom Diffusion and textual-inversion loading
    # diffusers 0.42 sets the processors only when given the pipeline (`_pipeline`): without it the call returns
    # having changed nothing, and .safetensors files lack the self-attention entries it counts
    pipe.unet.load_attn_procs(str(out), weight_name="pytorch_custom_diffusion_weights.bin", _pipeline=pipe)
    pipe.load_textual_inversion(str(out), weight_name="sks.safetensors")
    procs = {n: p for n, p in pipe.unet.attn_processors.items() if ".attn2." in n}
    for name, proc in procs.items():
        layer = name.removesuffix(".processor")
        assert torch.equal(proc.to_k_custom_diffusion.weight, a.unet[f"{layer}.to_k.weight"])
    assert np.abs(render(pipe) - cdvideo_image(perturbed_weights)).max() < 2e-3


def test_a_multi_vector_token_exports_as_one_embedding_each_tool_expands(tmp_path):
    """A token of 3 vectors (sks, sks_1, sks_2) leaves as one (3, D) embedding in every layout: diffusers loads the
    Custom Diffusion folder's and renders as cdvideo does; the A1111/ComfyUI file beside a LoRA holds all three
    rows under the token's name, and imports back as the same three tokens."""
    from conftest import make_weights

    src = make_weights(tmp_path / "multi.safetensors", vectors=3)
    w = weights.load(src)
    assert main(["export", str(src), "--format", "diffusers", "-o", str(tmp_path / "cd")]) == 0
    assert sorted(p.name for p in (tmp_path / "cd").glob("sks*")) == ["sks.safetensors"]
    pipe = diffusers_pipe()
    pipe.unet.load_attn_procs(str(tmp_path / "cd"), weight_name="pytorch_custom_diffusion_weights.bin",
                              _pipeline=pipe)
    pipe.load_textual_inversion(str(tmp_path / "cd"), weight_name="sks.safetensors")
    assert pipe.maybe_convert_prompt(PROMPT, pipe.tokenizer) == "a photo of a sks sks_1 sks_2 dog"
    assert np.abs(render(pipe) - cdvideo_image(src)).max() < 2e-3

    assert main(["export", str(src), "--format", "lora", "-o", str(tmp_path / "l" / "rex.safetensors")]) == 0
    assert sorted(p.name for p in (tmp_path / "l").iterdir()) == ["rex.safetensors", "sks.safetensors"]
    assert torch.equal(load_file(str(tmp_path / "l" / "sks.safetensors"))["emb_params"], w.embeddings)
    back = weights.load(import_weights(str(tmp_path / "cd"), str(tmp_path / "back.safetensors"), "tiny",
                                       class_word="dog"))
    assert back.tokens == w.tokens and torch.equal(back.embeddings, w.embeddings)


def test_custom_diffusion_folder_written_by_diffusers_imports(tmp_path):
    from diffusers.models.attention_processor import CustomDiffusionAttnProcessor

    pipe, gen = diffusers_pipe(), torch.Generator().manual_seed(0)
    procs = {}
    for name in pipe.unet.attn_processors:
        attn = pipe.unet.get_submodule(name.removesuffix(".processor"))
        cross = ".attn2." in name
        proc = CustomDiffusionAttnProcessor(train_kv=cross, train_q_out=False, hidden_size=attn.to_k.out_features,
                                            cross_attention_dim=attn.to_k.in_features)
        if cross:
            with torch.no_grad():
                for lin in (proc.to_k_custom_diffusion, proc.to_v_custom_diffusion):
                    lin.weight.copy_(attn.to_k.weight + 0.3 * torch.randn(lin.weight.shape, generator=gen))
        procs[name] = proc
    pipe.unet.set_attn_processor(procs)
    folder = tmp_path / "diffusers-run"
    pipe.unet.save_attn_procs(str(folder), safe_serialization=False)  # pytorch_custom_diffusion_weights.bin
    torch.save({"sks": torch.randn(tiny.CROSS_DIM, generator=gen)}, folder / "sks.bin")
    mine = import_weights(str(folder), str(tmp_path / "w.safetensors"), "tiny", class_word="dog")

    theirs = diffusers_pipe()
    theirs.unet.load_attn_procs(str(folder), weight_name="pytorch_custom_diffusion_weights.bin", _pipeline=theirs)
    theirs.load_textual_inversion(str(folder), weight_name="sks.bin")
    assert np.abs(render(theirs) - cdvideo_image(mine)).max() < 2e-3
    assert np.abs(render(theirs) - cdvideo_image(folder)).max() < 2e-3  # --weights takes the folder itself


def test_full_export_reloads_with_from_pretrained_and_from_single_file(tmp_path, perturbed_weights):
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    expected = cdvideo_image(perturbed_weights)
    assert main(["export", str(perturbed_weights), "--format", "full", "-o", str(tmp_path / "full")]) == 0
    pipe = StableDiffusionPipeline.from_pretrained(str(tmp_path / "full"))
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    assert np.array_equal(render(pipe), expected)
    meta = json.loads((tmp_path / "full" / "cdvideo_export.json").read_text())
    assert meta["base_model"] == "tiny" and json.loads(meta["tokens"]) == ["sks"]

    one = tmp_path / "one" / "model.safetensors"
    assert main(["export", str(perturbed_weights), "--format", "full", "--single-file", "-o", str(one)]) == 0
    pipe = StableDiffusionPipeline.from_single_file(str(one), config=str(config_folder("tiny")),
                                                    local_files_only=True, safety_checker=None)
    pipe.load_textual_inversion(str(one.with_name("sks.safetensors")), token="sks")
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    assert np.abs(render(pipe) - expected).max() < 1e-5


def test_lora_export_exact_at_full_rank_and_loaded_by_diffusers(tmp_path, perturbed_weights, capsys):
    w = weights.load(perturbed_weights)
    base = dict(tiny.build_components()["unet"].named_parameters())
    assert main(["export", str(perturbed_weights), "--format", "lora", "--rank", "full",
                 "-o", str(tmp_path / "full" / "rex.safetensors")]) == 0
    t = load_file(str(tmp_path / "full" / "rex.safetensors"))
    for name, value in w.unet.items():
        key = "lora_unet_" + name.removesuffix(".weight").replace(".", "_")
        scale = float(t[f"{key}.alpha"]) / t[f"{key}.lora_down.weight"].shape[0]  # kohya: alpha / rank
        delta = t[f"{key}.lora_up.weight"].double() @ t[f"{key}.lora_down.weight"].double() * scale
        assert torch.allclose(base[name].double() + delta, value.double(), atol=1e-5), name
    assert load_file(str(tmp_path / "full" / "sks.safetensors"))["emb_params"].shape == (1, tiny.CROSS_DIM)

    capsys.readouterr()
    assert main(["export", str(perturbed_weights), "--format", "lora", "--rank", "2",
                 "-o", str(tmp_path / "r2" / "rex.safetensors")]) == 0
    printed = capsys.readouterr().out
    t = load_file(str(tmp_path / "r2" / "rex.safetensors"))
    name = next(iter(w.unet))
    key = "lora_unet_" + name.removesuffix(".weight").replace(".", "_")
    delta = w.unet[name].double() - base[name].detach().double()
    scale = float(t[f"{key}.alpha"]) / t[f"{key}.lora_down.weight"].shape[0]
    approx = t[f"{key}.lora_up.weight"].double() @ t[f"{key}.lora_down.weight"].double() * scale
    direct = float(torch.linalg.norm(delta - approx) / torch.linalg.norm(delta))
    assert f"{name}: relative error {direct:.2e}" in printed

    pipe = diffusers_pipe()  # diffusers' own kohya LoRA loading (peft), fused into the weights
    pipe.load_lora_weights(str(tmp_path / "full" / "rex.safetensors"))
    pipe.fuse_lora()
    fused = dict(pipe.unet.named_parameters())
    for name, value in w.unet.items():
        got = fused.get(name, fused.get(name.replace(".weight", ".base_layer.weight")))
        assert torch.allclose(got, value, atol=1e-4), name


def test_single_file_base_and_motion_module_render_as_their_folders(tmp_path, perturbed_weights):
    from safetensors.torch import save_file

    from cdvideo.data.ldm import to_ldm

    c = tiny.build_components()
    base = tmp_path / "tiny-base.safetensors"
    save_file(to_ldm(c["unet"], c["vae"], c["text_encoder"]), str(base))
    assert np.array_equal(cdvideo_image(perturbed_weights, model=str(base), model_config="tiny", force=True),
                          cdvideo_image(perturbed_weights))

    adapter = {k: v for k, v in tiny.build_motion_adapter().state_dict().items()}
    original = {_original_motion_key(k): v for k, v in adapter.items()}
    torch.save(original, tmp_path / "mm_tiny.ckpt")
    args = ["animate", "--weights", str(perturbed_weights), "--prompt", PROMPT, "--num-inference-steps", "2",
            "--seed", "1", "--format", "png"]
    assert main([*args, "--adapter", "tiny", "--output-dir", str(tmp_path / "a")]) == 0
    assert main([*args, "--adapter", str(tmp_path / "mm_tiny.ckpt"), "--output-dir", str(tmp_path / "b")]) == 0
    frames = lambda d: [np.asarray(__import__("PIL.Image").Image.open(p)) for p in sorted(d.rglob("*.png"))]  # noqa
    assert frames(tmp_path / "a") and all(np.array_equal(x, y) for x, y in zip(frames(tmp_path / "a"),
                                                                              frames(tmp_path / "b")))


def _original_motion_key(k: str) -> str:
    """diffusers MotionAdapter name -> original AnimateDiff motion-module name (the inverse of diffusers' map)."""
    head, _, rest = k.partition(".motion_modules.")
    idx, _, rest = rest.partition(".")
    rest = (rest.replace("attn1", "attention_blocks.0").replace("attn2", "attention_blocks.1")
            .replace("norm1", "norms.0").replace("norm2", "norms.1").replace("norm3", "ff_norm"))
    return f"{head}.motion_modules.{idx}.temporal_transformer.{rest}"


def test_few_step_preset_with_a_local_adapter_file_keeps_the_subject(tmp_path, perturbed_weights):
    from safetensors.torch import save_file

    from cdvideo.pipelines.registry import load_adapter
    from cdvideo.tasks.render import Options, _video_pipe

    save_file(tiny.build_motion_adapter().state_dict(), str(tmp_path / "lightning_tiny.safetensors"))
    assert main(["animate", "--weights", str(perturbed_weights), "--prompt", PROMPT, "--adapter",
                 str(tmp_path / "lightning_tiny.safetensors"), "--preset", "lightning-4", "--format", "gif",
                 "--output-dir", str(tmp_path / "out")]) == 0
    sidecar = json.loads(next((tmp_path / "out").glob("*.json")).read_text())
    assert sidecar["preset"] == "lightning-4" and sidecar["num_inference_steps"] == 4
    assert sidecar["guidance_scale"] == 1.0
    m, w, _ = load_personalized(None, [str(perturbed_weights)])
    opts = Options(preset="lightning-4")
    pipe = _video_pipe(m, load_adapter(str(tmp_path / "lightning_tiny.safetensors"), torch.float32), opts,
                       torch.device("cpu"), False)
    assert type(pipe.scheduler).__name__ == "EulerDiscreteScheduler"
    assert pipe.scheduler.config.timestep_spacing == "trailing"
    params = dict(pipe.unet.named_parameters())
    assert all(torch.equal(params[k], v) for k, v in w.unet.items())  # the subject's K/V are in place
    assert "sks" in pipe.tokenizer.get_added_vocab()


def test_incompatible_adapter_is_one_line_naming_both(tmp_path, capsys):
    code = main(["animate", "--model", "toyworld", "--adapter", "tiny", "--prompt", "a red ball",
                 "--num-inference-steps", "1", "--output-dir", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and "motion adapter tiny" in err and "does not fit base toyworld" in err
    assert not (tmp_path / "o").exists()


def test_malformed_inputs_are_clear_errors_and_write_nothing(tmp_path, perturbed_weights, capsys):
    data = perturbed_weights.read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[: len(data) // 2])
    cut = ["export", str(tmp_path / "cut.safetensors"), "--format", "lora", "-o", str(tmp_path / "x.safetensors")]
    assert main(cut) == 2
    assert "cut.safetensors" in capsys.readouterr().err and not (tmp_path / "x.safetensors").exists()

    folder = tmp_path / "cd"
    assert main(["export", str(perturbed_weights), "--format", "diffusers", "-o", str(folder)]) == 0
    (folder / "sks.safetensors").unlink()
    assert main(["import", str(folder), "-o", str(tmp_path / "y.safetensors"), "--model", "tiny"]) == 2
    assert "no token embedding file" in capsys.readouterr().err

    t = torch.load(folder / "pytorch_custom_diffusion_weights.bin", weights_only=True)
    key = next(k for k, v in t.items() if isinstance(v, torch.Tensor))
    t[key] = torch.zeros(3, 3)
    torch.save(t, folder / "pytorch_custom_diffusion_weights.bin")
    torch.save({"sks": torch.zeros(tiny.CROSS_DIM)}, folder / "sks.bin")
    assert main(["import", str(folder), "-o", str(tmp_path / "y.safetensors"), "--model", "tiny"]) == 2
    assert "shape (3, 3)" in capsys.readouterr().err

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'pwned'}",))

    with open(tmp_path / "evil.bin", "wb") as f:
        pickle.dump({"sks": Evil()}, f)
    assert main(["import", str(tmp_path / "evil.bin"), "-o", str(tmp_path / "y.safetensors"), "--model", "tiny"]) == 2
    assert "refused" in capsys.readouterr().err
    assert not (tmp_path / "pwned").exists() and not (tmp_path / "y.safetensors").exists()


def test_export_names_that_comfyui_and_a1111_list(tmp_path, capsys):
    """`-o NAME` gets `.safetensors`; a token that is no valid file name on Windows gets a safe one; metadata
    names files and hashes, never a local path; each file still loads with diffusers' own loaders."""
    from conftest import make_weights

    from cdvideo.data.files import sha256_file

    src = make_weights(tmp_path / "src" / "rex.safetensors", token="<new1>")
    w = weights.load(src)
    for out, expected in ((tmp_path / "a" / "mylora", tmp_path / "a" / "mylora.safetensors"),
                          (tmp_path / "b" / "mylora.safetensors", tmp_path / "b" / "mylora.safetensors")):
        assert main(["export", str(src), "--format", "lora", "--rank", "full", "-o", str(out)]) == 0
        assert sorted(p.name for p in expected.parent.iterdir()) == sorted([expected.name, "new1.safetensors"])
        printed = capsys.readouterr().out
        assert "embedding:new1" in printed and "token='<new1>'" in printed
        from safetensors import safe_open

        for f in (expected, expected.with_name("new1.safetensors")):
            with safe_open(str(f), "pt") as fh:
                meta = fh.metadata()
            assert str(tmp_path) not in json.dumps(meta), meta  # no absolute path travels with a shared file
            assert meta["source"] == "rex.safetensors" and meta["source_sha256"] == sha256_file(src)
        pipe = diffusers_pipe()
        pipe.load_lora_weights(str(expected))
        pipe.load_textual_inversion(str(expected.with_name("new1.safetensors")), token="<new1>")
        pipe.fuse_lora()
        fused = dict(pipe.unet.named_parameters())
        name = next(iter(w.unet))
        got = fused.get(name, fused.get(name.replace(".weight", ".base_layer.weight")))
        assert torch.allclose(got, w.unet[name], atol=1e-4)
        row = pipe.text_encoder.get_input_embeddings().weight[pipe.tokenizer.convert_tokens_to_ids("<new1>")]
        assert torch.allclose(row, w.embeddings[0], atol=1e-6)
    one = tmp_path / "one" / "model"
    assert main(["export", str(src), "--format", "full", "--single-file", "-o", str(one)]) == 0
    assert sorted(p.name for p in one.parent.iterdir()) == ["model.safetensors", "new1.safetensors"]
    assert main(["export", str(src), "--format", "diffusers", "-o", str(tmp_path / "cd")]) == 0
    assert (tmp_path / "cd" / "new1.safetensors").is_file()
    assert str(tmp_path) not in (tmp_path / "cd" / "cdvideo_export.json").read_text()
