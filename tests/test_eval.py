import csv
import json

import pytest
import torch
from conftest import FIXTURES
from PIL import Image

from cdvideo.apps.cli import main
from cdvideo.math.metrics import max_query_cosine, mean_cosine_to_set, paired_cosine, strip_tokens, temporal_consistency
from cdvideo.models import extractors
from cdvideo.tasks.evaluate import dreambench_prompts

FAST = ["--height", "64", "--width", "64", "--num-inference-steps", "2"]
TINY = ["--clip-model", "tiny", "--dino-model", "tiny", "--blip-model", "tiny"]


def test_metric_math_by_hand():
    a = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    b = torch.tensor([[0.0, 3.0], [2.0, 2.0]])
    assert paired_cosine(a, b).tolist() == pytest.approx([0.0, 1.0])
    refs = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    assert mean_cosine_to_set(torch.tensor([[1.0, 0.0]]), refs).item() == pytest.approx(0.5)
    frames = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    assert temporal_consistency(frames) == pytest.approx(0.5)  # cos 1, then cos 0
    q = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
    assert max_query_cosine(q, torch.tensor([[0.0, 5.0]])).item() == pytest.approx(1.0)


def test_token_removal():
    assert strip_tokens("a sks dog on the beach", ["sks"]) == "a dog on the beach"
    assert strip_tokens("a <new1> dog next to a zwx backpack", ["<new1>", "zwx"]) == "a dog next to a backpack"
    assert strip_tokens("a sksdog and tasks", ["sks"]) == "a sksdog and tasks"


def test_dreambench_prompts_by_class():
    live, obj = dreambench_prompts("dog"), dreambench_prompts("backpack")
    assert len(live) == len(obj) == 25
    assert "a {token} {class_word} wearing a red hat" in live and "a {token} {class_word} wearing a red hat" not in obj


@pytest.mark.parametrize("kind", ["clip", "dino", "blip"])
def test_tiny_extractors_run(kind):
    ex = extractors.load(kind, "tiny")
    feats = ex.images([Image.new("RGB", (70, 50), (200, 10, 10)), Image.new("RGB", (64, 64))])
    assert feats.shape[0] == 2 and torch.isfinite(feats).all()
    if kind != "dino":
        t = ex.texts(["a dog on the beach", "a cat"])
        assert t.shape == (2, feats.shape[1])


def test_blip2_itc_matches_the_models_own_scores():
    ex = extractors.load("blip", "tiny-blip2")
    images = [Image.new("RGB", (40, 40), (255, 0, 0)), Image.new("RGB", (40, 40))]
    texts = ["a dog", "a cat on a mat"]
    ours = max_query_cosine(ex.images(images), ex.texts(texts))
    inputs = ex.processor(images=images, text=texts, return_tensors="pt", padding=True)
    with torch.no_grad():
        theirs = ex.model(**inputs, use_image_text_matching_head=False).logits_per_image
    assert torch.allclose(ours.float(), theirs.diagonal(), atol=1e-5)


def make_folder(tmp_path, perturbed_weights):
    gen = tmp_path / "gen"
    assert main(["sample", "--weights", str(perturbed_weights), "--prompt", "a sks dog on the beach", "--seed", "0",
                 "1", "--output-dir", str(gen), *FAST]) == 0
    assert main(["animate", "--weights", str(perturbed_weights), "--prompt", "a sks dog running", "--num-frames",
                 "4", "--format", "gif", "--output-dir", str(gen), *FAST]) == 0
    return gen


def test_eval_generated_writes_tables_and_resumes(tmp_path, perturbed_weights, capsys, monkeypatch):
    gen = make_folder(tmp_path, perturbed_weights)
    out = tmp_path / "eval"
    args = ["eval", "--generated", str(gen), "--references", str(FIXTURES / "dog"), "--output-dir", str(out), *TINY]
    assert main(args) == 0
    rows = list(csv.DictReader((out / "samples.csv").open()))
    assert len(rows) == 3 and {r["text"] for r in rows} == {"a dog on the beach", "a dog running"}
    from PIL import Image

    from cdvideo.data.photos import load_folder
    from cdvideo.models import extractors

    clip, dino, refs = extractors.load("clip", "tiny"), extractors.load("dino", "tiny"), load_folder(FIXTURES / "dog")
    for r in rows:  # each row holds the metric of its own file against the references, recomputed here
        if r["file"].endswith(".gif"):
            continue
        image = [Image.open(gen / r["file"]).convert("RGB")]
        clip_i = float(mean_cosine_to_set(clip.images(image), clip.images(refs)).mean())
        dino_i = float(mean_cosine_to_set(dino.images(image), dino.images(refs)).mean())
        clip_t = float(paired_cosine(clip.images(image), clip.texts([r["text"]])).mean())
        assert (float(r["clip_i"]), float(r["dino_i"]), float(r["clip_t"])) == pytest.approx(
            (clip_i, dino_i, clip_t), abs=1e-5)
    clip_row = [r for r in rows if r["file"].endswith(".gif")][0]
    assert 0.0 < float(clip_row["temporal"]) <= 1.0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["samples"] == 3 and summary["overall"]["clip_t"]["n"] == 3
    assert "| **overall** | 3 |" in (out / "summary.md").read_text()

    from cdvideo.tasks import evaluate
    monkeypatch.setattr(evaluate.Scorer, "score", lambda *a: pytest.fail("a finished sample was scored again"))
    assert main(args) == 0


def test_eval_generates_dreambench_samples_and_skips_finished_ones(tmp_path, perturbed_weights, monkeypatch):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a {token} {class_word} in the snow\na {token} {class_word} wearing a red hat\n")
    out = tmp_path / "eval"
    args = ["eval", "--weights", str(perturbed_weights), "--prompts", str(prompts), "--seeds", "0",
            "--references", str(FIXTURES / "dog"), "--metrics", "clip_t,dino_i", "--output-dir", str(out),
            *TINY, *FAST]
    assert main(args) == 0
    assert len(list((out / "generated").glob("*.json"))) == 2
    assert json.loads((out / "summary.json").read_text())["samples"] == 2

    from cdvideo.tasks import render
    monkeypatch.setattr(render, "sample", lambda *a: pytest.fail("finished samples were generated again"))
    assert main(args) == 0


def test_eval_generates_and_scores_clips(tmp_path, perturbed_weights):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a {token} {class_word} running in the snow\n")
    out = tmp_path / "eval"
    assert main(["eval", "--weights", str(perturbed_weights), "--video", "--prompts", str(prompts), "--seeds", "0",
                 "--num-frames", "4", "--references", str(FIXTURES / "dog"), "--output-dir", str(out),
                 *TINY, *FAST]) == 0
    [row] = list(csv.DictReader((out / "samples.csv").open()))
    assert row["text"] == "a dog running in the snow" and 0 < float(row["temporal"]) <= 1
    assert len(list((out / "generated").glob("*_frames/*.png"))) == 4


def test_eval_errors(tmp_path, capsys):
    assert main(["eval", "--output-dir", str(tmp_path)]) == 2
    assert "give --weights" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["eval", "--generated", str(tmp_path / "empty"), "--output-dir", str(tmp_path / "o")]) == 2
    assert "no sidecar JSON files" in capsys.readouterr().err


def test_two_processes_split_the_work_and_gather(tmp_path, perturbed_weights):
    import os
    import subprocess
    import sys

    gen = tmp_path / "gen"
    assert main(["sample", "--weights", str(perturbed_weights), "--prompt", "a sks dog", "--seed", "0", "1", "2",
                 "--output-dir", str(gen), *FAST]) == 0
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "cdvideo", "eval",
           "--generated", str(gen), "--references", str(FIXTURES / "dog"), "--output-dir", str(tmp_path / "e"), *TINY]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.count("wrote") == 1  # only the main process writes the tables
    assert "2/2" in proc.stderr and "3/3" not in proc.stderr  # the main process scored its share only
    assert len(list((tmp_path / "e" / "scores").glob("*.json"))) == 3
    assert json.loads((tmp_path / "e" / "summary.json").read_text())["samples"] == 3
