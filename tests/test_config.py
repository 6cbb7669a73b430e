from pathlib import Path

import pytest

from cdvideo.data.builtins import images_folder
from cdvideo.data.config import load_train_config
from cdvideo.data.motion_config import load_motion_config
from cdvideo.errors import CdvideoError

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "configs").rglob("*.yaml"))


def test_there_are_configs():
    assert any(p.name == "dog.yaml" for p in CONFIGS)


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_config_validates_and_names_its_command(path):
    first = path.read_text().splitlines()[0]
    assert first.startswith("# cdvideo ") and str(path.relative_to(ROOT)) in first
    if "/train/" in path.as_posix():
        cfg = load_train_config(path)
        assert cfg.concepts and (ROOT / images_folder(cfg.concepts[0].images)).is_dir()
    if "/motion/" in path.as_posix():  # its clips are the user's: given on the command line when the file has none
        cfg = load_motion_config(path, ["references=[a.mp4]", "prompt=a dance"] if "references: []" in
                                 path.read_text() else [])
        assert cfg.references and cfg.prompt
        assert "references: []" in path.read_text() or all((ROOT / r).exists() for r in cfg.references)


def test_the_motion_demo_runs_the_shipped_motion_config():
    from cdvideo.apps.motion_demo import MOTION_TRAIN, motion_config

    shipped = load_motion_config(ROOT / "configs/motion/toyworld_circling.yaml")
    ours = motion_config(Path("refs"), Path("out"))
    same = [k for k in MOTION_TRAIN if "." not in k]
    assert [getattr(shipped, k) for k in same] == [getattr(ours, k) for k in same]
    assert shipped.validation.every == ours.validation.every == 0
    from cdvideo.apps.ui.motion import SMALL  # the web app's settings for a 64 px base

    assert all(getattr(shipped, k) == v for k, v in SMALL.items())


def test_every_cell_of_the_recipe_tuning_is_the_train_config_it_names():
    """tune.py's grid (docs/toyworld/tuning.md): each cell's overrides validate as `cdvideo train` reads them and
    set what its table row says; each cell trains into a folder of its own."""
    from cdvideo.apps.demo import train_config
    from cdvideo.apps.worldbuild.tune import GRID
    from cdvideo.toyworld.instances import get

    for s in GRID:
        cfg = train_config(get("striped_ball"), Path("out"), s.steps, s.spl,
                           s.overrides(get("striped_ball"), Path("cutouts")))
        o = cfg.optimizer
        assert (o.learning_rate, o.token_learning_rate or o.learning_rate) == (s.lr, s.token_lr or s.lr)
        assert (cfg.max_steps, cfg.spl.weight, cfg.spl.pooling) == (s.steps, s.spl, s.pooling)
        assert (cfg.concepts[0].initializer or "ball") == (s.initializer or "ball").format(colour="yellow", cls="ball")
        assert (cfg.concepts[0].images, cfg.concepts[0].masks, cfg.unmasked_weight) == (
            ("cutouts", "alpha", s.unmasked) if s.cutouts else
            ("toyworld:striped_ball", "toyworld:striped_ball", s.unmasked) if s.unmasked is not None else
            ("toyworld:striped_ball", None, 0.1))
        assert not o.scale_lr and cfg.resolution == 64  # on top of the demo's recipe
        assert cfg.flip == s.flip and cfg.concepts[0].vectors == s.vectors
    assert len({s.tag() for s in GRID}) == len(GRID)


def test_the_tuning_table_pairs_each_cell_with_the_recipes_run_of_the_same_instance_and_seed():
    """tune.py's last column: the mean of per-(instance, seed) differences, with its bootstrap interval."""
    from cdvideo.apps.worldbuild.tune import against

    recipe = {"a": [{"stills": 0.5, "clips": 0.4, "composition": 0.9}, {"stills": 0.7, "clips": 0.6,
                                                                          "composition": 0.8}]}
    cell = {"a": [{"stills": 0.6, "clips": 0.4, "composition": 0.8}, {"stills": 0.8, "clips": 0.6,
                                                                        "composition": 0.7}]}
    assert against(cell, recipe) == "+0.100 [+0.100, +0.100] / +0.000 [+0.000, +0.000] / -0.100 [-0.100, -0.100]"


def test_paper_defaults():
    cfg = load_train_config(ROOT / "configs/train/dog.yaml")
    assert (cfg.resolution, cfg.batch_size, cfg.max_steps, cfg.seed) == (512, 2, 500, 42)
    assert cfg.spl.weight == 1.0 and cfg.optimizer.learning_rate == 1e-5 and cfg.optimizer.scale_lr
    assert cfg.optimizer.betas == (0.9, 0.999) and cfg.optimizer.weight_decay == 1e-2
    assert cfg.optimizer.max_grad_norm == 1.0 and cfg.mixed_precision == "no"


def test_overrides_are_typed():
    cfg = load_train_config(ROOT / "configs/train/dog.yaml", [
        "max_steps=7", "spl.weight=0.5", "concepts.0.token=<new1>", "optimizer.betas=[0.8, 0.9]",
        "mixed_precision=no", "validation.seeds=[3]", "concepts.1.images=samples/dog",
        "concepts.1.class_word=cat", "concepts.1.token=zwx"])
    assert cfg.max_steps == 7 and cfg.spl.weight == 0.5 and cfg.concepts[0].token == "<new1>"
    assert cfg.optimizer.betas == (0.8, 0.9) and cfg.validation.seeds == [3]
    assert [c.class_word for c in cfg.concepts] == ["dog", "cat"]


@pytest.mark.parametrize("override, message", [
    ("max_step=3", "unknown key 'max_step'"),
    ("spl.wieght=1", "unknown key 'spl.wieght'"),
    ("max_steps=many", "max_steps: expected int, got 'many'"),
    ("spl.pooling=mean", "spl.pooling: 'mean' is not one of"),
    ("flip=maybe", "flip: expected bool"),
    ("spl.personal_template=a photo of a {class_word}", "spl.personal_template: template .* lacks {token}"),
    ("spl.class_template=a photo", "spl.class_template: template .* lacks {class_word}"),
    ("instance_template=photo of a {token}", "instance_template: template .* lacks {class_word}"),
    ("concepts.0.token=two words", "concepts.0.token"),
    ("concepts.0.token=dog", "concepts.0.token: 'dog' must differ from the class word"),
    ("resolution=100", "resolution: 100 must be a multiple of 8"),
    ("maxsteps", "not key=value"),
])
def test_bad_keys_and_values_name_the_key(override, message):
    with pytest.raises(CdvideoError, match=message):
        load_train_config(ROOT / "configs/train/dog.yaml", [override])


def test_missing_and_broken_files(tmp_path):
    with pytest.raises(CdvideoError, match="not found"):
        load_train_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed\n")
    with pytest.raises(CdvideoError, match="bad.yaml: not valid YAML"):
        load_train_config(bad)
    empty = tmp_path / "empty.yaml"
    empty.write_text("# nothing\n")
    with pytest.raises(CdvideoError, match="at least one concept"):
        load_train_config(empty)


@pytest.mark.parametrize("folder", ["Rex #2", "on", "null", "2024", "no"])
def test_a_path_and_a_class_word_stay_text_on_the_command_line(folder):
    """`key=value` reads numbers, booleans and lists as YAML, but a text field keeps what was typed."""
    cfg = load_train_config(None, [f"concepts.0.images={folder}", "concepts.0.class_word=no", "max_steps=7",
                                   "overwrite=true", "validation.seeds=[1, 2]", "spl.weight=1e-3"])
    assert cfg.concepts[0].images == folder and cfg.concepts[0].class_word == "no"
    assert (cfg.max_steps, cfg.overwrite, cfg.validation.seeds, cfg.spl.weight) == (7, True, [1, 2], 1e-3)
    typed = load_train_config(None, values={"concepts.0.images": folder, "concepts.0.class_word": "on",
                                            "max_steps": 3})  # what programmatic callers pass: no parsing
    assert (typed.concepts[0].images, typed.concepts[0].class_word, typed.max_steps) == (folder, "on", 3)
    with pytest.raises(CdvideoError, match="max_steps: expected int, got 'many'"):
        load_train_config(None, [f"concepts.0.images={folder}", "concepts.0.class_word=dog", "max_steps=many"])


@pytest.mark.parametrize("key, value", [("concepts.0.token", "../x"), ("concepts.0.class_word", "a/../../b"),
                                        ("concepts.0.token", ".sks")])
def test_names_that_would_escape_a_folder_are_refused(key, value):
    with pytest.raises(CdvideoError, match=key.replace(".", r"\.")):
        load_train_config(None, values={"concepts.0.images": "x", "concepts.0.class_word": "dog", key: value})
