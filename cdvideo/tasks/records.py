"""What a sidecar keeps of each file a clip was rendered from (weights, motion LoRAs, the source video), and the
check that a file is still the one recorded."""

from __future__ import annotations

from pathlib import Path

from cdvideo.data import motion_lora
from cdvideo.data.files import sha256_file
from cdvideo.data.hub import download
from cdvideo.errors import CdvideoError


def weights_record(files: list[str]) -> list[dict]:
    return [{"path": str(Path(f).resolve()), "sha256": sha256_file(f)} for f in files]


def check_unchanged(rec: dict, what: str) -> None:
    """A one-line error unless the file a sidecar names is still there with its recorded sha256."""
    if not Path(rec["path"]).exists() or sha256_file(rec["path"]) != rec["sha256"]:
        raise CdvideoError(f"{what} {rec['path']} is missing or changed since the clip was rendered")


def source_record(video: str | None) -> dict:
    """The source clip of a video-to-video render: its path and sha256 (of a folder of frames: of its files)."""
    return {} if video is None else {"video": str(Path(video).resolve()), "video_sha256": sha256_file(video)}


def model_record(ref: str) -> dict:
    """A model file or folder's path and sha256; a hub id's name (no local file to hash: sha256 None)."""
    return weights_record([ref])[0] if Path(ref).exists() else {"path": ref, "sha256": None}


def controlnet_record(controlnets: list[tuple[str, float]], preprocess: list[str]) -> list[dict]:
    """The ControlNets: path and sha256 (`model_record`), scale, preprocessing of the control clip."""
    return [{**model_record(ref), "scale": scale, "preprocess": pre}
            for (ref, scale), pre in zip(controlnets, preprocess)]


def controlnets_from_record(record: dict) -> tuple[list[tuple[str, float]], list[str], list[str]]:
    """The sidecar's ControlNets, preprocessing and control clips, each checked to be the file rendered with."""
    nets, videos = record.get("controlnets") or [], record.get("control_videos") or []
    for r in [*(n for n in nets if n["sha256"] is not None), *videos]:
        check_unchanged(r, "ControlNet or control video")
    return [(n["path"], float(n["scale"])) for n in nets], [n["preprocess"] for n in nets], [v["path"] for v in videos]


def sparsectrl_from_record(record: dict) -> str | None:
    """The sidecar's SparseCtrl model, checked to be the one rendered with (None without one)."""
    rec = record.get("sparsectrl")
    if rec and rec["sha256"] is not None:
        check_unchanged(rec, "SparseCtrl model")
    return rec["path"] if rec else None


def ip_adapter_from_record(record: dict) -> tuple[str | None, float]:
    """The sidecar's IP-Adapter weights file (checked to be the one rendered with; None without one) and scale."""
    rec = record.get("ip_adapter")
    if rec and rec["sha256"] is not None:
        check_unchanged(rec, "IP-Adapter")
    return (rec["path"] if rec else None), float(record.get("ip_adapter_scale", 1.0))


def read_motion_loras(entries: list[tuple[str, float]]) -> list[tuple]:
    """(MotionLora, scale, name) of each --motion-lora: a file in either layout, a folder holding one, or a hub id."""
    out = []
    for ref, scale in entries:
        path = Path(ref)
        if not path.exists() and "/" in ref and not ref.startswith((".", "/")):
            path = hub_motion_lora(ref)
        out.append((motion_lora.read(path), float(scale), Path(ref).name))
    return out


def hub_motion_lora(repo_id: str) -> Path:
    """A motion LoRA repository from the Hugging Face hub (e.g. guoyww/animatediff-motion-lora-zoom-in)."""
    return download(repo_id, f"motion LoRA {repo_id}", ["*.safetensors", "*.ckpt"])


def motion_lora_record(entries: list[tuple[str, float]]) -> list[dict]:
    """What the sidecar keeps of each motion LoRA: its file, sha256 and scale."""
    return [{**model_record(ref), "scale": scale} for ref, scale in entries]


def motion_loras_from_record(record: dict) -> list[tuple[str, float]]:
    """The sidecar's motion LoRAs, each checked to be the file the clip was rendered with."""
    out = [(record["motion_lora"], 1.0)] if record.get("motion_lora") else []  # an earlier sidecar: one, scale 1
    for r in record.get("motion_loras") or []:
        if r["sha256"] is not None:
            check_unchanged(r, "motion LoRA")
        out.append((r["path"], float(r["scale"])))
    return out
