"""Every number a user gives has its valid range where it enters, and a value outside it is one line naming the key
(or flag) and the range, never a traceback. Swept from the schemas themselves (the config dataclasses and the
command-line parsers) with zero, negative, huge, non-numeric and non-finite values; what the ranges accept runs."""

import argparse
import dataclasses
import typing

import pytest
import yaml
from conftest import source_gif, tiny_overrides

from cdvideo.apps.cli import build_parser, main
from cdvideo.apps.worldbuild.__main__ import parser as worldbuild_parser
from cdvideo.data.config import TrainConfig, load_config, to_dict
from cdvideo.data.motion_config import MotionTrainConfig
from cdvideo.data.ranges import Flag, Range, range_of
from cdvideo.errors import CdvideoError

PROBES = ("0", "-1", "1000000000000", "1" + "0" * 400, "abc", "nan")  # zero, negative, huge, beyond a float, not a
# number, not finite
SCHEMAS = {"train": TrainConfig, "train-motion": MotionTrainConfig}


def numeric_keys(schema: type, prefix: str = "") -> list[tuple[str, type, Range | None]]:
    """(dotted key, number type, Range or None) of every number in `schema`, nested configs and lists included."""
    found = []
    for name, hint in typing.get_type_hints(schema, include_extras=True).items():
        found += _numbers(hint, prefix + name)
    return found


def _numbers(hint, key: str) -> list:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Annotated:
        return [(key, args[0], range_of(hint))] if args[0] in (int, float) else []
    if hint in (int, float):
        return [(key, hint, None)]
    if dataclasses.is_dataclass(hint):
        return numeric_keys(hint, key + ".")
    if origin in (list, tuple):  # a list's first item; each of a tuple's
        return [n for i, a in enumerate(args if origin is tuple else args[:1]) for n in _numbers(a, f"{key}.{i}")]
    return [n for a in args for n in _numbers(a, key)]  # Optional, Union


def accepts(kind: type, valid: Range, probe: str) -> bool:
    try:
        return valid.holds(kind(probe))
    except ValueError:
        return False


def test_every_number_in_every_config_declares_its_range():
    for command, schema in SCHEMAS.items():
        keys = numeric_keys(schema)
        assert len(keys) > 15
        assert [key for key, _, valid in keys if valid is None] == [], f"{command}: numbers without a range"


def one_line(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    return err.strip()


@pytest.mark.parametrize("command", SCHEMAS)
def test_config_values_outside_their_range_are_one_line_and_the_rest_run(command, tmp_path, dog_dir, capsys):
    """Each numeric key with each probe: outside its range `cdvideo COMMAND key=value` is one line naming the key and
    the range; every probe the ranges accept, together in one short run, trains."""
    schema = SCHEMAS[command]
    defaults = tmp_path / "defaults.yaml"  # every key at its default: `optimizer.betas.0=...` changes one of two
    defaults.write_text(yaml.safe_dump(to_dict(schema())))
    accepted = []
    for key, kind, valid in numeric_keys(schema):
        for probe in PROBES:
            if accepts(kind, valid, probe):
                accepted.append(f"{key}={probe}")
                continue
            assert main([command, "--config", str(defaults), f"{key}={probe}"]) == 2
            line = one_line(capsys)
            assert line.startswith(f"error: {defaults}: {key}: "), line
            assert f"give {valid}" in line or "is not one of" in line, line  # latent_pool: auto, off or a number
            with pytest.raises(CdvideoError, match=f"{key}: "):  # the web app's forms give typed values
                load_config(schema, defaults, values={key: _typed(probe)})
    assert len(accepted) >= 8  # zeros: loss weights, warm-up, checkpoint and validation intervals, seeds...
    if command == "train":
        args = ["train", *tiny_overrides(tmp_path / "run", dog_dir, "max_steps=2", *accepted)]
    else:
        from cdvideo.toyworld.motions import write_reference_clips

        refs = write_reference_clips("circling", tmp_path / "refs")
        args = ["train-motion", "--config", "configs/motion/toyworld_circling.yaml", f"references=[{refs[0].parent}]",
                f"output_dir={tmp_path / 'run'}", "max_steps=2", "rank=2", "report_to=none", *accepted]
    assert main(args) == 0, capsys.readouterr().err


def _typed(probe: str):
    try:
        return float(probe)
    except ValueError:
        return probe


def numeric_flags(parser: argparse.ArgumentParser, prog: list[str] = ()) -> list:
    """(command words, the action, its Flag) of every number-typed flag of `parser` and its subcommands."""
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found += numeric_flags(sub, [*prog, name])
        elif action.type in (int, float) or isinstance(action.type, Flag):
            found.append(([*prog], action, action.type))
    return found


def required_args(parser: argparse.ArgumentParser) -> list[str]:
    """Placeholder values for a command's positional and required arguments, so only the probed flag can fail."""
    args = []
    for a in parser._actions:
        if a.required and a.option_strings:
            args += [a.option_strings[0], a.choices[0] if a.choices else "x"]
        elif not a.option_strings and not isinstance(a, argparse._SubParsersAction) and a.nargs != "*":
            args.append("x")
    return args


def test_every_numeric_flag_of_every_command_checks_its_range(capsys):
    """`cdvideo` and the world's build: each number flag declares its range, and a probe outside it is argparse's
    one line naming the flag and the range (exit 2), before anything loads."""
    parsers = {"cdvideo": build_parser(), "worldbuild": worldbuild_parser()}
    flags = [(name, *f) for name, p in parsers.items() for f in numeric_flags(p)]
    assert len(flags) > 20
    assert [(words, a.dest) for _, words, a, kind in flags if not isinstance(kind, Flag)] == []
    for name, words, action, kind in flags:
        parser = parsers[name]
        for word in words:
            parser = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[word]
        for probe in PROBES:
            if accepts(kind.kind, kind.valid, probe):
                continue
            with pytest.raises(SystemExit) as exit_:
                parsers[name].parse_args([*words, *required_args(parser), action.option_strings[0], probe])
            assert exit_.value.code == 2
            line = one_line(capsys)
            assert action.option_strings[0] in line and f"give {kind.valid}" in line, line


@pytest.mark.parametrize("command", ["animate", "sample"])
def test_render_flags_the_ranges_accept_run_together(command, tmp_path, perturbed_weights, controlnet, ip_adapter):
    """Every probe the render flags accept (a zero scale, seed and guidance; a zero ControlNet and IP-Adapter scale,
    with a ControlNet and an IP-Adapter), in one render."""
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[command]
    accepted = [arg for _, a, kind in numeric_flags(sub) for probe in PROBES if accepts(kind.kind, kind.valid, probe)
                for arg in (a.option_strings[0], probe)]
    zeros = ["--scale", "0", "--seed", "0", "--guidance-scale", "0"]
    assert accepted == (zeros + ["--control-scale", "0", "--ip-adapter-scale", "0"] if command == "animate" else zeros)
    size = ["--num-frames", "2", "--format", "gif", "--controlnet", str(controlnet), "--control-video",
            str(source_gif(tmp_path / "c.gif")), "--ip-adapter", str(ip_adapter), "--ip-adapter-image",
            str(source_gif(tmp_path / "c.gif"))] if command == "animate" else []
    assert main([command, "--weights", str(perturbed_weights), "--prompt", "a sks dog", "--num-inference-steps", "2",
                 "--height", "64", "--width", "64", *size, "--output-dir", str(tmp_path), *accepted]) == 0
