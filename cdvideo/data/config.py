"""Typed training configuration: dataclasses, YAML files and `key=value` overrides."""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, Mapping, Optional, Union

import yaml

from cdvideo.data.files import check_name
from cdvideo.data.ranges import (
    BATCH,
    EVERY,
    GRAD_NORM,
    GUIDANCE,
    INFERENCE_STEPS,
    KEPT_CHECKPOINTS,
    LEARNING_RATE,
    LOSS_WEIGHT,
    SEED,
    SIZE,
    STEPS,
    WEIGHT_DECAY,
    OutOfRange,
    Range,
    range_of,
)
from cdvideo.errors import CdvideoError, first_line

BETA = Range(0, 1, below=True)  # Adam's moment decay


def vector_tokens(name: str, n: int) -> list[str]:
    """The tokens of an n-vector embedding, as diffusers and A1111 name them: name, name_1 ... name_{n-1}."""
    return [name] + [f"{name}_{i}" for i in range(1, n)]


@dataclass
class ConceptConfig:
    images: str = ""  # folder of 3-10 photos of the subject, or a video file (mp4, mov, webm, mkv)
    video_frames: Annotated[int, Range(3, 100)] = 8  # frames picked from a video: sharp, as different as can be
    class_word: str = ""  # e.g. dog
    token: str = "sks"  # new token added to the tokenizer
    initializer: Optional[str] = None  # word(s) whose embedding initialises the token; default class_word
    # subject masks named as the photos, white on the subject (`<base>:<instance>` for a bundled instance's), or
    # `alpha`: the photos' own transparency; the loss weighs the rest by `unmasked_weight` (kohya's masked loss,
    # OneTrainer's masked training)
    masks: Optional[str] = None
    # embedding vectors of the token: more than 1 adds <token>_1 ... (diffusers' and A1111's multi-vector
    # textual inversion), and every prompt's token stands for all of them
    vectors: Annotated[int, Range(1, 8)] = 1

    def tokens(self) -> list[str]:
        """The token and its extra vectors' tokens, as diffusers names them: sks, sks_1, sks_2."""
        return vector_tokens(self.token, self.vectors)

    def spelled(self) -> str:
        """What the token stands for in a prompt: 'sks sks_1 sks_2'."""
        return " ".join(self.tokens())


@dataclass
class SPLConfig:
    weight: Annotated[float, LOSS_WEIGHT] = 1.0  # lambda of the semantic preservation loss (paper: 1.0)
    personal_template: str = "a photo of a {token} {class_word}"
    class_template: str = "a photo of a {class_word}"
    pooling: Literal["eos", "official"] = "eos"  # official = argmax(token id), as the reference code


@dataclass
class PriorConfig:
    enabled: bool = False
    class_images: Optional[str] = None  # folder per class word; default <output_dir>/class_images/<class_word>
    num_class_images: Annotated[int, Range(1, 100_000)] = 200
    prompt: str = "a photo of a {class_word}"
    weight: Annotated[float, LOSS_WEIGHT] = 1.0
    num_inference_steps: Annotated[int, INFERENCE_STEPS] = 50
    guidance_scale: Annotated[float, GUIDANCE] = 6.0


@dataclass
class OptimizerConfig:
    # the paper's text prints 1e-6; the public scripts use 1e-5 scaled by batch size
    learning_rate: Annotated[float, LEARNING_RATE] = 1e-5
    # the new token rows' own rate (scaled like learning_rate); default learning_rate, as Custom Diffusion
    token_learning_rate: Optional[Annotated[float, LEARNING_RATE]] = None
    scale_lr: bool = True  # lr *= batch_size * gradient_accumulation_steps * num_processes
    betas: tuple[Annotated[float, BETA], Annotated[float, BETA]] = (0.9, 0.999)
    weight_decay: Annotated[float, WEIGHT_DECAY] = 1e-2
    eps: Annotated[float, Range(0, 1, above=True)] = 1e-8
    max_grad_norm: Annotated[float, GRAD_NORM] = 1.0
    use_8bit_adam: bool = False
    lr_scheduler: Literal["constant", "constant_with_warmup", "linear", "cosine"] = "constant"
    lr_warmup_steps: Annotated[int, EVERY] = 0


@dataclass
class ValidationConfig:
    every: Annotated[int, EVERY] = 0  # steps between validations; 0 disables
    prompts: list[str] = field(default_factory=lambda: ["a photo of a {token} {class_word}"])
    seeds: list[Annotated[int, SEED]] = field(default_factory=lambda: [0])
    num_inference_steps: Annotated[int, INFERENCE_STEPS] = 25
    guidance_scale: Annotated[float, GUIDANCE] = 6.0


@dataclass
class TrainConfig:
    model: str = "stable-diffusion-v1-5/stable-diffusion-v1-5"  # hub id, folder, one-file checkpoint, toyworld, tiny
    model_config: Optional[str] = None  # how to read a one-file checkpoint: sd15 (default), tiny, or a folder
    revision: Optional[str] = None
    variant: Optional[str] = None
    output_dir: str = "runs/dog"
    overwrite: bool = False
    concepts: list[ConceptConfig] = field(default_factory=list)
    instance_template: str = "photo of a {token} {class_word}"
    resolution: Annotated[int, SIZE] = 512
    augment: bool = True  # Custom Diffusion scale augmentation; false = center-crop resize
    unmasked_weight: Annotated[float, Range(0, 1)] = 0.1  # loss weight off the subject, where concepts have masks
    flip: bool = True  # random horizontal flip (p=0.5)
    params: Literal["kv", "crossattn"] = "kv"  # kv: attn2.to_k/to_v; crossattn: also to_q/to_out
    # the noise levels trained on, as kohya's --min_timestep / --max_timestep: t uniform in [min, max)
    min_timestep: Annotated[int, Range(0, 999)] = 0
    max_timestep: Annotated[int, Range(1, 1000)] = 1000
    # Min-SNR-gamma loss weighting (kohya's --min_snr_gamma, diffusers' --snr_gamma; 5 in the paper): a sample whose
    # SNR is above gamma (a low noise level) weighs gamma / SNR, the rest 1; null: every level alike
    min_snr_gamma: Optional[Annotated[float, Range(0, 1000, above=True)]] = None
    spl: SPLConfig = field(default_factory=SPLConfig)
    prior: PriorConfig = field(default_factory=PriorConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    validation: ValidationConfig = field(default_factory=ValidationConfig)
    max_steps: Annotated[int, STEPS] = 500
    batch_size: Annotated[int, BATCH] = 2
    gradient_accumulation_steps: Annotated[int, BATCH] = 1
    seed: Annotated[int, SEED] = 42
    mixed_precision: Literal["no", "fp16", "bf16"] = "no"
    gradient_checkpointing: bool = False
    # VAE latents encoded once (see cdvideo/tasks/latents.py): variants per concept
    latent_pool: Union[Literal["auto", "off"], Annotated[int, Range(1, 100_000)]] = "auto"
    # steps between loss syncs (progress bar, logs, NaN check): no host-device sync per step
    log_every: Annotated[int, STEPS] = 10
    compile: bool = False  # torch.compile the UNet
    channels_last: bool = False  # UNet in channels-last memory format
    checkpoint_every: Annotated[int, EVERY] = 250  # 0 disables
    checkpoints_total_limit: Optional[Annotated[int, KEPT_CHECKPOINTS]] = 2
    resume: Optional[str] = None  # "latest" or a checkpoint folder
    save_dtype: Literal["float32", "float16", "bfloat16"] = "float32"
    report_to: Literal["tensorboard", "none"] = "tensorboard"

    def added_tokens(self) -> list[str]:
        """Every token the run adds, each concept's extra vectors after it: one embedding row each."""
        return [t for c in self.concepts for t in c.tokens()]

    def token_class_words(self) -> list[str]:
        """Each added token's concept's class word."""
        return [c.class_word for c in self.concepts for _ in c.tokens()]

    def token_initializers(self) -> list[str]:
        """The word(s) each added token starts from: its concept's initializer, else its class word."""
        return [c.initializer or c.class_word for c in self.concepts for _ in c.tokens()]


def to_dict(cfg: Any) -> dict:
    """The config as plain YAML/JSON-able data."""
    return _plain(dataclasses.asdict(cfg))


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def from_dict(cls: type, data: Any, where: str = "") -> Any:
    """Build dataclass `cls` from `data`, naming the key of any unknown field or wrong type."""
    if not isinstance(data, dict):
        raise CdvideoError(f"{where or 'config'}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls, include_extras=True)
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in data.items():
        path = f"{where}.{key}" if where else str(key)
        if key not in names:
            raise CdvideoError(f"unknown key '{path}' (known: {', '.join(sorted(names))})")
        kwargs[key] = _coerce(hints[key], value, path)
    return cls(**kwargs)


class CommandLineText(str):
    """A `key=value` override's value as typed: read by the schema's type, never as a YAML comment."""


def _coerce(tp: Any, value: Any, path: str) -> Any:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Annotated:  # a numeric key with its valid range (cdvideo/data/ranges.py)
        valid = range_of(tp)
        try:
            value = _coerce(args[0], value, path)
        except CdvideoError as e:
            raise CdvideoError(f"{e}; give {valid}" if valid else str(e)) from None
        if valid is not None:
            valid.check(value, path)
        return value
    if isinstance(value, CommandLineText):
        value = _from_command_line(tp, origin, args, value, path)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for alternative in (a for a in args if a is not type(None)):
            try:
                return _coerce(alternative, value, path)
            except CdvideoError as e:
                errors.append(e)
        raise next((e for e in errors if isinstance(e, OutOfRange)), errors[0])  # a number: its range
    if origin is dict:
        if not isinstance(value, dict):
            raise CdvideoError(f"{path}: expected a mapping, got {value!r}")
        return {_coerce(args[0], k, f"{path}.{k}"): _coerce(args[1], v, f"{path}.{k}") for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, path)
    if origin is Literal:
        if value is False and ("no" in args or "off" in args):  # YAML 1.1 reads a bare `no`/`off` as false
            value = "no" if "no" in args else "off"
        if value not in args:
            raise CdvideoError(f"{path}: {value!r} is not one of {', '.join(map(repr, args))}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise CdvideoError(f"{path}: expected a list, got {value!r}")
        if origin is tuple:
            if len(value) != len(args):
                raise CdvideoError(f"{path}: expected {len(args)} values, got {len(value)}")
            return tuple(_coerce(a, v, f"{path}.{i}") for i, (a, v) in enumerate(zip(args, value)))
        return [_coerce(args[0], v, f"{path}.{i}") for i, v in enumerate(value)]
    return _scalar(tp, value, path)


def _from_command_line(tp: Any, origin: Any, args: tuple, text: CommandLineText, path: str) -> Any:
    """Text for a text field (a path stays a string: `Rex #2`, `on`, `2024`), YAML for numbers, booleans, lists."""
    if origin in (Union, types.UnionType):
        if type(None) in args and text in ("null", "~", ""):
            return None
        if str in args or any(typing.get_origin(a) is Literal and text in typing.get_args(a) for a in args):
            return str(text)
    elif tp is str or (origin is Literal and text in args):
        return str(text)
    try:
        return yaml.safe_load(text) if text else ""
    except yaml.YAMLError:
        raise CdvideoError(f"{path}: {str(text)!r} is not a valid value") from None


def _scalar(tp: type, value: Any, path: str) -> Any:
    if tp is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            return float(value)
        except OverflowError:  # an integer beyond any float
            raise OutOfRange(f"{path}: {value} is out of range") from None
    if tp is float and isinstance(value, str):
        try:  # YAML 1.1 reads "1e-5" as a string
            return float(value)
        except ValueError:
            pass
    if tp is str and isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, tp) and not (tp is int and isinstance(value, bool)):
        return value
    raise CdvideoError(f"{path}: expected {tp.__name__}, got {value!r}")


def apply_override(data: dict, override: str) -> None:
    """Set `a.b.0.c=value` in nested `data`; the value is read by the schema's type when the config is built."""
    if "=" not in override:
        raise CdvideoError(f"override {override!r} is not key=value")
    key, raw = override.split("=", 1)
    set_value(data, key, CommandLineText(raw))


def set_value(data: dict, key: str, value: Any) -> None:
    """Set the typed `value` at the dotted `key` (`concepts.0.images`) in nested `data`."""
    parts = key.strip().split(".")
    node: Any = data
    for i, part in enumerate(parts[:-1]):
        nxt = parts[i + 1]
        if isinstance(node, list):
            node = _list_slot(node, part, key, nxt)
        else:
            node = node.setdefault(part, [] if nxt.isdigit() else {})
    last = parts[-1]
    if isinstance(node, list):
        idx = int(last) if last.isdigit() else -1
        if not 0 <= idx <= len(node):
            raise CdvideoError(f"override {key}: index {last} out of range")
        node[idx:idx + 1] = [value]
    else:
        node[last] = value


def _list_slot(node: list, part: str, key: str, nxt: str) -> Any:
    if not part.isdigit() or int(part) > len(node):
        raise CdvideoError(f"override {key}: '{part}' is not a valid list index")
    if int(part) == len(node):
        node.append([] if nxt.isdigit() else {})
    return node[int(part)]


def load_train_config(path: str | Path | None, overrides: list[str] = (),
                      values: Mapping[str, Any] | None = None) -> TrainConfig:
    """Read a YAML config (or none), apply command-line `key=value` overrides, then typed `values` by dotted key
    (what programmatic callers pass), and validate against the schema."""
    cfg = load_config(TrainConfig, path, overrides, values)
    check_train_config(cfg)
    return cfg


def load_config(cls: type, path: str | Path | None, overrides: list[str] = (),
                values: Mapping[str, Any] | None = None) -> Any:
    """Dataclass `cls` from a YAML file (or none), `key=value` overrides and typed `values`; errors name the file
    and the key path."""
    data: dict = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise CdvideoError(f"config file {path} not found")
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as e:
            raise CdvideoError(f"{path}: not valid YAML ({first_line(e)})") from None
        if not isinstance(data, dict):
            raise CdvideoError(f"{path}: expected a mapping of keys at the top level")
    for ov in overrides:
        apply_override(data, ov)
    for key, value in (values or {}).items():
        set_value(data, key, value)
    try:
        return from_dict(cls, data)
    except CdvideoError as e:
        raise CdvideoError(f"{path}: {e}" if path else str(e)) from None


def check_train_config(cfg: TrainConfig) -> None:
    """Checks across fields that types alone cannot express."""
    if not cfg.concepts:
        raise CdvideoError("concepts: at least one concept (images, class_word, token) is required")
    seen: set[str] = set()
    for i, c in enumerate(cfg.concepts):
        if not c.images:
            raise CdvideoError(f"concepts.{i}.images: give the folder of photos (or a video file)")
        if not c.class_word.strip():
            raise CdvideoError(f"concepts.{i}.class_word: give the subject's class, e.g. dog")
        if not c.token.strip() or " " in c.token:
            raise CdvideoError(f"concepts.{i}.token: {c.token!r} must be one word, e.g. sks or <new1>")
        check_name(c.token, f"concepts.{i}.token")  # it names files (exports, embeddings)
        check_name(c.class_word, f"concepts.{i}.class_word", spaces=True)
        if c.token in (c.class_word, c.initializer):
            raise CdvideoError(f"concepts.{i}.token: {c.token!r} must differ from the class word; use e.g. sks")
        if c.token in seen:
            raise CdvideoError(f"concepts.{i}.token: {c.token!r} is used by two concepts")
        seen.add(c.token)
    for key, tpl, need, banned in [
        ("instance_template", cfg.instance_template, ("{token}", "{class_word}"), ()),
        ("spl.personal_template", cfg.spl.personal_template, ("{token}", "{class_word}"), ()),
        ("spl.class_template", cfg.spl.class_template, ("{class_word}",), ("{token}",)),
        ("prior.prompt", cfg.prior.prompt, ("{class_word}",), ("{token}",)),
    ]:
        for n in need:
            if n not in tpl:
                raise CdvideoError(f"{key}: template {tpl!r} lacks {n}")
        for b in banned:
            if b in tpl:
                raise CdvideoError(f"{key}: template {tpl!r} must not contain {b}")
    if cfg.min_timestep >= cfg.max_timestep:  # each one's range is in the schema
        raise CdvideoError(f"min_timestep: {cfg.min_timestep} must be below max_timestep ({cfg.max_timestep})")
    if cfg.resolution % 8:  # its range is in the schema
        raise CdvideoError(f"resolution: {cfg.resolution} must be a multiple of 8")
    if cfg.resume not in (None, "latest") and not Path(cfg.resume).is_dir():
        raise CdvideoError(f"resume: {cfg.resume} is neither 'latest' nor a checkpoint folder")
