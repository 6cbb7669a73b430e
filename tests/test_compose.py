import pytest
import torch
from conftest import FIXTURES, make_weights, tiny_overrides

from cdvideo.apps.cli import main
from cdvideo.data import weights
from cdvideo.data.config import load_train_config
from cdvideo.math.compose import constrained_merge
from cdvideo.models import architectures as tiny
from cdvideo.models.merge import _captions, _target_features, compose, reg_captions
from cdvideo.models.text import encode_prompts, set_token_rows
from cdvideo.tasks.train import train


def test_constrained_merge_math():
    gen = torch.Generator().manual_seed(0)
    w0, reg = torch.randn(6, 10, generator=gen), torch.randn(200, 10, generator=gen)
    c, v = torch.randn(4, 10, generator=gen), torch.randn(6, 4, generator=gen)
    w = constrained_merge(w0, reg.T @ reg, c, v)
    assert torch.allclose(w @ c.double().T, v.double(), atol=1e-9)  # constraints hold
    # any other feasible W (W + Z with Z C^T = 0) is farther from W0 on the regularisation features
    null = torch.linalg.svd(c.double()).Vh[4:]  # rows orthogonal to C
    other = w + torch.randn(6, 6, generator=gen).double() @ null
    assert torch.allclose(other @ c.double().T, v.double(), atol=1e-9)
    dist = lambda x: torch.linalg.norm((x - w0.double()) @ reg.double().T)  # noqa: E731
    assert dist(w) < dist(other)


@pytest.fixture(scope="module")
def two_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("compose")
    return (make_weights(d / "a.safetensors", "sks", "dog", seed=1),
            make_weights(d / "b.safetensors", "zwx", "backpack", seed=2))


def test_composed_file_meets_constraints_and_stays_near_base(two_files):
    ws = [weights.load(p) for p in two_files]
    m = tiny.build_components()
    merged = compose(ws, m)
    avg = compose([weights.load(p) for p in two_files], tiny.build_components(), "average")
    assert merged.tokens == ["sks", "zwx"] and merged.class_words == ["dog", "backpack"]
    assert torch.equal(merged.embeddings[0], ws[0].embeddings[0])
    assert torch.equal(merged.embeddings[1], ws[1].embeddings[0])

    tok, te = m["tokenizer"], m["text_encoder"]
    assert len(tok) == 49408  # the base components were left as they were
    reg = encode_prompts(te, tok, reg_captions()).flatten(0, 1).double()
    base = dict(m["unet"].named_parameters())
    for w in ws:
        set_token_rows(tok, te, w.tokens, w.embeddings)
    for name in merged.unet:
        w0 = base[name].detach().double()
        for w in ws:
            f = _target_features(tok, te, _captions(w))
            target = w.unet[name].double() @ f.T
            assert torch.allclose(merged.unet[name].double() @ f.T, target, atol=1e-3, rtol=1e-4), name
        near = torch.linalg.norm((merged.unet[name].double() - w0) @ reg.T)
        far = torch.linalg.norm((avg.unet[name].double() - w0) @ reg.T)
        assert near < far, name


def test_compose_command_and_on_the_fly(tmp_path, two_files, capsys):
    out = tmp_path / "ab.safetensors"
    assert main(["compose", *map(str, two_files), "-o", str(out)]) == 0
    w = weights.load(out)
    assert w.tokens == ["sks", "zwx"] and w.metadata["compose_method"] == "constrained"
    assert main(["compose", *map(str, two_files), "-o", str(out)]) == 2  # never overwritten
    assert "exists" in capsys.readouterr().err
    assert main(["sample", "--weights", str(out), "--prompt", "a sks dog sitting next to a zwx backpack",
                 "--height", "64", "--width", "64", "--num-inference-steps", "2", "--output-dir",
                 str(tmp_path / "o")]) == 0
    assert main(["animate", *sum((["--weights", str(p)] for p in two_files), []), "--prompt",
                 "a sks dog next to a zwx backpack", "--height", "64", "--width", "64", "--num-inference-steps",
                 "2", "--format", "gif", "--output-dir", str(tmp_path / "v")]) == 0
    assert "composing 2 weights files on the fly" in capsys.readouterr().out
    assert len(list((tmp_path / "v").glob("*.gif"))) == 1


def test_compose_errors_and_rename(tmp_path, two_files, capsys):
    a, b = two_files
    clash = make_weights(tmp_path / "c.safetensors", "sks", "cat", seed=3)
    other_base = make_weights(tmp_path / "d.safetensors", "qrt", "cat", seed=4, base_model="other/model")
    multi = make_weights(tmp_path / "e.safetensors", "zwx", "cat", seed=5, vectors=3)
    cases = [([str(a)], "at least two"), ([str(a), str(clash)], "token 'sks' is in both .*--rename c:sks=zwx"),
             ([str(a), str(other_base)], "different bases"),
             ([str(a), str(multi)], "e.safetensors: token 'zwx' has several embedding vectors; .*vectors: 1")]
    for files, message in cases:
        assert main(["compose", *files, "-o", str(tmp_path / "x.safetensors")]) == 2
        assert __import__("re").search(message, capsys.readouterr().err), message
    assert not (tmp_path / "x.safetensors").exists()
    assert main(["compose", str(a), str(clash), "--rename", "c:sks=qqq", "-o", str(tmp_path / "x.safetensors")]) == 0
    assert weights.load(tmp_path / "x.safetensors").tokens == ["sks", "qqq"]


def test_joint_training_moves_both_token_rows(tmp_path):
    cfg = load_train_config(None, tiny_overrides(
        tmp_path / "joint", FIXTURES / "dog", "concepts.1.images=" + str(FIXTURES / "backpack"),
        "concepts.1.class_word=backpack", "concepts.1.token=zwx", "max_steps=2"))
    path = train(cfg)
    w = weights.load(path)
    assert w.tokens == ["sks", "zwx"] and w.class_words == ["dog", "backpack"]
    base = tiny.build_components()
    emb = base["text_encoder"].get_input_embeddings().weight
    start = torch.stack([emb[1929], emb[base["tokenizer"]("backpack", add_special_tokens=False).input_ids].mean(0)])
    assert not torch.equal(w.embeddings[0], start[0]) and not torch.equal(w.embeddings[1], start[1])
    assert main(["sample", "--weights", str(path), "--prompt", "a sks dog sitting next to a zwx backpack",
                 "--height", "64", "--width", "64", "--num-inference-steps", "2", "--output-dir",
                 str(tmp_path / "o")]) == 0
