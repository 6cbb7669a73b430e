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


def _photo_and_mask(folder, name="a", size=(96, 80)):
    """A gray photo with a red square on its left half, and the square's mask (white) under masks/."""
    photo = Image.new("RGB", size, (128, 128, 128))
    photo.paste((255, 0, 0), (8, 8, 40, 40))
    mask = Image.new("L", size, 0)
    mask.paste(255, (8, 8, 40, 40))
    (folder / "masks").mkdir(exist_ok=True)
    photo.save(folder / f"{name}.png")
    mask.save(folder / "masks" / f"{name}.png")


def test_a_subject_mask_rides_with_its_photo_through_every_augmentation(tmp_path):
    """The mask comes back as the photo's alpha and is cropped, mirrored, scaled and pasted with it: the loss
    weights are 1 where the (red) subject is, the unmasked weight on the (gray) rest, 0 off the pasted box; the
    colours off the subject stay what the photo shows (not blackened by an RGBA resize)."""
    from cdvideo.data.photos import subject_weights

    _photo_and_mask(tmp_path)
    (image,) = load_folder(tmp_path, masks=str(tmp_path / "masks"))
    assert image.mode == "RGBA"
    rng, seen = np.random.default_rng(0), set()
    for _ in range(60):
        px, box, prefix = augment(image, 64, 8, rng)
        rgb, w = subject_weights(px, box, 8, 0.1)
        assert rgb.shape == (64, 64, 3) and w.shape == (8, 8)
        red = ((rgb[..., 0] > 0.9) & (rgb[..., 1] < -0.9)).reshape(8, 8, 8, 8).mean(axis=(1, 3))
        gray = (np.abs(rgb - 0.0039) < 0.05).all(-1).reshape(8, 8, 8, 8).mean(axis=(1, 3))
        assert np.allclose(w[(red == 1) & (box == 1)], 1.0, atol=0.02)
        assert np.allclose(w[(gray == 1) & (box == 1)], 0.1, atol=0.02)
        assert (w[box == 0] == 0).all() and (w <= box).all()
        seen.add("left" if red[:, :4].sum() > red[:, 4:].sum() else "right")  # mirrored with the photo
    assert seen == {"left", "right"}
    plain = augment(load_folder(tmp_path)[0], 64, 8, np.random.default_rng(3))
    assert np.array_equal(subject_weights(plain[0], plain[1], 8, 0.1)[1], plain[1])  # no mask: the box alone


def test_a_missing_or_misshapen_mask_is_one_line_naming_the_photo(tmp_path):
    _photo_and_mask(tmp_path, "a")
    Image.new("RGB", (96, 80)).save(tmp_path / "b.png")
    with pytest.raises(CdvideoError, match=r"masks: no mask for the photo b.png; add b.png, white where"):
        load_folder(tmp_path, masks=str(tmp_path / "masks"))
    Image.new("L", (80, 80)).save(tmp_path / "masks" / "b.jpg")
    with pytest.raises(CdvideoError, match=r"b.jpg: 80x80 px is not the shape of the photo b.png \(96x80\)"):
        load_folder(tmp_path, masks=str(tmp_path / "masks"))
    Image.new("L", (192, 160)).save(tmp_path / "masks" / "b.jpg")  # twice the size: the same shape
    assert [im.mode for im in load_folder(tmp_path, masks=str(tmp_path / "masks"))] == ["RGBA", "RGBA"]
    with pytest.raises(CdvideoError, match=r"masks folder .*nowhere not found; set the concept's `masks:`"):
        load_folder(tmp_path, masks=str(tmp_path / "nowhere"))


def test_the_bundled_instances_masks_cover_their_objects():
    """`masks: toyworld:<instance>`: each photo's mask is white on the object: the pixels it covers whole are the
    instance's body or pattern colour (nearest of the world's colours; 93-100% measured), and the object is 2-40%
    of the photo."""
    from cdvideo.toyworld.instances import INSTANCES
    from cdvideo.toyworld.world import COLOURS

    names, rgb = list(COLOURS), np.array(list(COLOURS.values()), dtype=float)  # (K, 3)
    for name, inst in INSTANCES.items():
        images = load_folder(f"toyworld:{name}", masks=f"toyworld:{name}")
        assert len(images) == 5
        for im in images:
            a = np.asarray(im, dtype=float)  # (64, 64, 4)
            assert 0.02 < a[..., 3].mean() / 255 < 0.4, name
            inside = a[a[..., 3] == 255][:, :3]  # (n, 3)
            nearest = np.array(names)[((inside[:, None] - rgb[None]) ** 2).sum(-1).argmin(1)]
            assert np.isin(nearest, [inst.colour, inst.pattern_colour]).mean() > 0.85, name  # edges blend


def test_masks_alpha_takes_the_subject_from_each_photos_transparency(tmp_path):
    """`masks: alpha` (a background-removed PNG, as kohya's alpha_mask): the transparency is the mask, the colours
    come composited on white; a photo without transparency is one line naming it."""
    photo = Image.new("RGBA", (80, 80), (0, 0, 255, 0))
    photo.paste((255, 0, 0, 255), (10, 10, 30, 30))
    photo.save(tmp_path / "a.png")
    (image,) = load_folder(tmp_path, masks="alpha")
    assert image.mode == "RGBA" and image.getpixel((15, 15)) == (255, 0, 0, 255)
    assert image.getpixel((60, 60)) == (255, 255, 255, 0)  # transparent: white, off the subject
    Image.new("RGB", (80, 80)).save(tmp_path / "b.jpg")
    with pytest.raises(CdvideoError, match=r"b.jpg: has no transparency to take the subject from \(masks: alpha\)"):
        load_folder(tmp_path, masks="alpha")
    (tmp_path / "b.jpg").unlink()
    Image.new("RGBA", (80, 80), (0, 0, 255, 255)).save(tmp_path / "c.png")  # an alpha channel, every pixel opaque
    with pytest.raises(CdvideoError, match=r"c.png: has no transparency to take the subject from"):
        load_folder(tmp_path, masks="alpha")
