import logging

import numpy as np
import pytest
from PIL import Image

from cdvideo.data.photos import Concept, augment, load_folder, load_image, sample_batch, to_rgb
from cdvideo.errors import CdvideoError


def test_modes_become_rgb(tmp_path):
    rgba = Image.new("RGBA", (80, 80), (255, 0, 0, 0))  # fully transparent -> white
    assert to_rgb(rgba).getpixel((0, 0)) == (255, 255, 255)
    assert to_rgb(Image.new("CMYK", (80, 80), (0, 0, 0, 0))).mode == "RGB"
    assert to_rgb(Image.new("L", (80, 80), 7)).getpixel((1, 1)) == (7, 7, 7)
    sixteen = Image.fromarray(np.full((80, 80), 65535, dtype=np.uint16))
    assert sixteen.mode.startswith("I") and to_rgb(sixteen).getpixel((0, 0)) == (255, 255, 255)


def test_exif_orientation_is_applied(tmp_path):
    im = Image.new("RGB", (100, 70), (0, 0, 255))
    exif = im.getexif()
    exif[0x0112] = 6  # rotate 90 degrees
    path = tmp_path / "rotated.jpg"
    im.save(path, exif=exif)
    assert load_image(path).size == (70, 100)


def test_folder_skips_non_images_and_rejects_bad_ones(tmp_path, caplog):
    Image.new("RGB", (80, 90)).save(tmp_path / "a.png")
    Image.new("RGB", (80, 90)).save(tmp_path / "b.webp")
    (tmp_path / "notes.txt").write_text("hello")
    with caplog.at_level(logging.WARNING):
        assert len(load_folder(tmp_path)) == 2
    assert "notes.txt: not an image" in caplog.text

    (tmp_path / "broken.jpg").write_bytes(b"not really a jpeg")
    with pytest.raises(CdvideoError, match="broken.jpg: cannot be read as an image"):
        load_folder(tmp_path)
    (tmp_path / "broken.jpg").unlink()
    Image.new("RGB", (40, 90)).save(tmp_path / "small.png")
    with pytest.raises(CdvideoError, match="small.png: 40x90 px is smaller than 64 px"):
        load_folder(tmp_path)


def test_missing_and_empty_folders(tmp_path):
    with pytest.raises(CdvideoError, match="not found"):
        load_folder(tmp_path / "missing")
    with pytest.raises(CdvideoError, match="holds no images"):
        load_folder(tmp_path)


def test_augmentation_masks_and_prefixes():
    image = Image.new("RGB", (120, 100), (255, 255, 255))
    rng = np.random.default_rng(0)
    kinds = set()
    for _ in range(200):
        px, mask, prefix = augment(image, 64, 8, rng)
        assert px.shape == (64, 64, 3) and mask.shape == (8, 8)
        assert px.min() >= -1 and px.max() <= 1
        if prefix in ("zoomed in ", "close up "):
            kinds.add("zoom")
            assert mask.all() and (px == 1).all()
        else:
            kinds.add("small" if prefix else "paste")
            ys, xs = np.nonzero(mask)
            # the mask lies inside the pasted (white) area at latent resolution
            for y, x in zip(ys, xs):
                assert (px[y * 8:(y + 1) * 8, x * 8:(x + 1) * 8] == 1).all()
            assert mask.sum() < 64
    assert kinds == {"zoom", "small", "paste"}
    px, mask, prefix = augment(image, 64, 8, rng, scale=False)
    assert mask.all() and prefix == ""


def test_batches_balance_concepts():
    im = Image.new("RGB", (80, 80))
    concepts = [Concept("sks", "dog", [im], "photo of a sks dog"), Concept("zwx", "backpack", [im],
                                                                           "photo of a zwx backpack")]
    batch = sample_batch(concepts, 2, 0, np.random.default_rng(0), 64, 8, True, True)
    assert batch["pixels"].shape == (2, 3, 64, 64) and batch["mask"].shape == (2, 1, 8, 8)
    assert batch["prompts"][0].endswith("sks dog") and batch["prompts"][1].endswith("zwx backpack")


def test_a_library_error_without_text_is_still_one_line_naming_the_file(tmp_path, monkeypatch):
    """A loader that raises an exception with no message (as some do on a damaged file) gives the file and the
    exception's type, not an IndexError from quoting its first line."""
    import safetensors.torch

    from cdvideo.data.tensors import read_tensors

    def raise_bare(*args, **kwargs):
        raise ValueError()

    monkeypatch.setattr(safetensors.torch, "load_file", raise_bare)
    path = tmp_path / "lora.safetensors"
    path.write_bytes(b"\0" * 16)
    with pytest.raises(CdvideoError, match=r"lora.safetensors: not a readable safetensors file \(ValueError\)"):
        read_tensors(path)


def test_a_hub_file_offline_or_missing_is_one_line_with_the_command_to_fetch_it(tmp_path, monkeypatch):
    """Offline: what was asked and the exact `hf download` line; a cached snapshot without the file: the same."""
    import huggingface_hub

    from cdvideo.data.hub import download_file

    def offline(*args, **kwargs):
        raise OSError("Cannot find an appropriate cached snapshot folder\nmore text")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
    with pytest.raises(CdvideoError, match=r"^IP-Adapter x: not a local file and not downloadable \(Cannot find an "
                                           r"appropriate cached snapshot folder\); download it once elsewhere "
                                           r"\(`hf download h94/IP-Adapter --include models/a.bin 'models/enc/\*'`\)"):
        download_file("h94/IP-Adapter", "models/a.bin", "IP-Adapter x", also=("models/enc/*",))
    monkeypatch.setattr(huggingface_hub, "snapshot_download", lambda *a, **k: str(tmp_path))
    with pytest.raises(CdvideoError, match=r"a.safetensors is not in o/r as downloaded here; download it "
                                           r"\(`hf download o/r a.safetensors`\)"):
        download_file("o/r", "a.safetensors", "preset")
    (tmp_path / "a.safetensors").write_bytes(b"x")
    assert download_file("o/r", "a.safetensors", "preset") == tmp_path / "a.safetensors"
