"""Motion LoRA files: each layout built in the test from its key conventions (never downloaded), loaded by
diffusers' own loader and by cdvideo's to the same motion-module weights; mismatches and damaged files give
one-line errors and change nothing."""

import pytest
import torch

from cdvideo.data import motion_lora
from cdvideo.errors import CdvideoError
from cdvideo.models.loading import load_components
from cdvideo.models.motion_lora import apply_motion_loras, temporal_modules
from cdvideo.pipelines.build import motion_unet, video_pipeline
from cdvideo.pipelines.registry import load_adapter, make_scheduler

RANK = 4


@pytest.fixture(scope="module")
def world():
    m = load_components("toyworld")
    return m, load_adapter("toyworld", torch.float32)


def random_pairs(unet, seed: int = 0) -> dict[str, motion_lora.Pair]:
    gen, modules = torch.Generator().manual_seed(seed), dict(unet.named_modules())
    return {n: motion_lora.Pair(torch.randn(RANK, modules[n].in_features, generator=gen) * 0.1,
                                torch.randn(modules[n].out_features, RANK, generator=gen) * 0.1)
            for n in temporal_modules(unet)}


def merged(unet, pairs) -> dict[str, torch.Tensor]:
    """What the LoRA should make of each weight: W + up @ down (alpha = rank)."""
    params = dict(unet.named_parameters())
    return {n: params[f"{n}.weight"].detach() + p.up @ p.down for n, p in pairs.items()}


def original_keys(pairs) -> dict[str, torch.Tensor]:
    """AnimateDiff's layout, written out by hand from its convention."""
    out = {}
    for name, p in pairs.items():
        block, rest = name.split(".motion_modules.")
        idx, _, tail = rest.partition(".transformer_blocks.")
        k, attn, proj = tail.split(".", 2)
        proj = {"to_out.0": "to_out"}.get(proj, proj)
        base = (f"{block}.motion_modules.{idx}.temporal_transformer.transformer_blocks.{k}."
                f"attention_blocks.{int(attn[-1]) - 1}.processor.{proj}_lora")
        out[f"{base}.down.weight"], out[f"{base}.up.weight"] = p.down, p.up
    return out


def test_the_layouts_hold_the_keys_other_tools_read(world, tmp_path):
    m, adapter = world
    pairs = random_pairs(motion_unet(m, adapter))
    lora = motion_lora.MotionLora(pairs)
    a = motion_lora.state_dict(lora, "animatediff")
    assert a.keys() == original_keys(pairs).keys()
    assert all("temporal" in k for k in a)  # AnimateDiff-Evolved drops every key without it
    assert "down_blocks.1.motion_modules.0.temporal_transformer.transformer_blocks.0.attention_blocks.0.processor." \
           "to_q_lora.down.weight" in a
    d = motion_lora.state_dict(lora, "diffusers")
    assert "unet.down_blocks.1.motion_modules.0.transformer_blocks.0.attn1.to_q.lora_A.weight" in d
    assert len(a) == len(d) == 2 * len(pairs)


def test_animatediff_layout_and_v2_ckpt_load_to_the_same_weights(world, tmp_path):
    """The original layout, hand-written as .safetensors and as a v2-style .ckpt (torch.save, weights_only)."""
    m, adapter = world
    unet = motion_unet(m, adapter)
    pairs = random_pairs(unet, seed=1)
    want = merged(unet, pairs)
    from safetensors.torch import save_file

    save_file(original_keys(pairs), str(tmp_path / "motion.safetensors"))
    torch.save({"state_dict": original_keys(pairs)}, tmp_path / "v2_lora_Circle.ckpt")
    for path in (tmp_path / "motion.safetensors", tmp_path / "v2_lora_Circle.ckpt"):
        u = motion_unet(m, adapter)
        apply_motion_loras(u, [(motion_lora.read(path), 1.0, path.name)], "toyworld")
        params = dict(u.named_parameters())
        assert all(torch.allclose(params[f"{n}.weight"], w, atol=1e-6) for n, w in want.items())


def test_diffusers_layout_loads_through_load_lora_weights_as_through_cdvideo(world, tmp_path):
    """A diffusers-layout file (keys from its convention) through AnimateDiffPipeline.load_lora_weights (peft),
    fused, gives the motion modules cdvideo's loader gives; so does the file cdvideo writes."""
    pytest.importorskip("peft")
    from safetensors.torch import save_file

    m, adapter = world
    sched = make_scheduler("ddim", m["scheduler"].config, animatediff=True)
    pairs = random_pairs(motion_unet(m, adapter), seed=2)
    hand = {f"unet.{n}.lora_{ab}.weight": t for n, p in pairs.items() for ab, t in (("A", p.down), ("B", p.up))}
    save_file(hand, str(tmp_path / "hand.safetensors"))
    written = motion_lora.write(motion_lora.MotionLora(pairs), tmp_path / "ours" / "pytorch_lora_weights.safetensors",
                                "diffusers", torch.float32)
    for path in (tmp_path / "hand.safetensors", written):
        pipe = video_pipeline(load_components("toyworld"), adapter, sched)
        pipe.load_lora_weights(str(path), adapter_name="motion")
        pipe.fuse_lora(lora_scale=0.5)
        pipe.unload_lora_weights()
        ours = motion_unet(m, adapter)
        apply_motion_loras(ours, [(motion_lora.read(path), 0.5, path.name)], "toyworld")
        a, b = dict(pipe.unet.named_parameters()), dict(ours.named_parameters())
        for n in pairs:
            assert torch.allclose(a[f"{n}.weight"], b[f"{n}.weight"], atol=1e-5), n
        assert not torch.equal(b[f"{next(iter(pairs))}.weight"], dict(motion_unet(m, adapter).named_parameters())[
            f"{next(iter(pairs))}.weight"])  # the LoRA did change the weights


def test_round_trip_through_both_layouts(world, tmp_path):
    m, adapter = world
    pairs = random_pairs(motion_unet(m, adapter), seed=3)
    for layout in motion_lora.LAYOUTS:
        path = motion_lora.write(motion_lora.MotionLora(pairs, {"prompt": "circling"}),
                                 tmp_path / f"{layout}.safetensors", layout, torch.float32)
        back = motion_lora.read(path)
        assert back.metadata["layout"] == layout and back.metadata["prompt"] == "circling"
        assert back.pairs.keys() == pairs.keys()
        assert all(torch.equal(back.pairs[n].down, p.down) and torch.equal(back.pairs[n].up, p.up)
                   for n, p in pairs.items())


def test_a_mismatched_or_damaged_file_is_one_line_and_changes_nothing(world, tmp_path):
    from safetensors.torch import save_file

    m, adapter = world
    unet = motion_unet(m, adapter)
    pairs = random_pairs(unet)
    good = motion_lora.MotionLora(pairs)
    foreign = motion_lora.MotionLora({"up_blocks.9.motion_modules.0.transformer_blocks.0.attn1.to_q":
                                      next(iter(pairs.values()))})
    before = {k: v.clone() for k, v in unet.state_dict().items()}
    with pytest.raises(CdvideoError, match=r"other\.safetensors changes up_blocks\.9.*motion adapter toyworld"):
        apply_motion_loras(unet, [(good, 1.0, "good.safetensors"), (foreign, 1.0, "other.safetensors")], "toyworld")
    assert all(torch.equal(before[k], v) for k, v in unet.state_dict().items())  # the good one was not applied
    name, pair = next(iter(pairs.items()))
    wide = motion_lora.MotionLora({name: motion_lora.Pair(torch.zeros(RANK, pair.down.shape[1] + 8), pair.up)})
    with pytest.raises(CdvideoError, match=r"in the file but .* in the motion adapter toyworld"):
        apply_motion_loras(unet, [(wide, 1.0, "wide.safetensors")], "toyworld")
    (tmp_path / "broken.safetensors").write_bytes(b"\x00not a safetensors file")
    save_file({"lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": torch.zeros(4, 4)},
              str(tmp_path / "image_lora.safetensors"))
    save_file({k: v for k, v in original_keys(pairs).items() if not k.endswith("up.weight")},
              str(tmp_path / "half.safetensors"))
    for file, message in (("broken", "not a readable weights file"), ("image_lora", "not a LoRA on the motion"),
                          ("half", "has only its down matrix")):
        with pytest.raises(CdvideoError, match=message) as e:
            motion_lora.read(tmp_path / f"{file}.safetensors")
        assert "\n" not in str(e.value) and file in str(e.value)
