"""Subject photos: loading, conversion to RGB, Custom Diffusion scale augmentation, loss masks, batches."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from cdvideo.data.builtins import images_folder, masks_folder
from cdvideo.data.video import frames_from_video, is_video
from cdvideo.errors import CdvideoError

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif"}  # a GIF: its first frame
MIN_SIZE = 64
MAX_SIDE = 2048  # photos are downscaled to this on load, so a folder of 40 MP photos stays small in memory


def to_rgb(image: Image.Image) -> Image.Image:
    """Any PIL mode to 8-bit RGB: 16-bit scaled down, transparency composited on white."""
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        arr = np.asarray(image, dtype=np.float64)
        arr = arr / 257.0 if arr.max() > 255 else arr
        image = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "L")
    if has_alpha(image):
        rgba = image.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(canvas, rgba)
    return image.convert("RGB")


def has_alpha(image: Image.Image) -> bool:
    return image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info)


def alpha_channel(image: Image.Image) -> Image.Image | None:
    """The image's transparency as an L image; None when it has none (no alpha channel, or every pixel opaque)."""
    if not has_alpha(image):
        return None
    alpha = image.convert("RGBA").getchannel("A")
    return None if alpha.getextrema()[0] == 255 else alpha


def transparent(path: Path) -> bool:
    """Whether an image file has transparency to take a subject mask from (`masks: alpha`); an unreadable file
    raises load_image's one-line error."""
    try:
        with Image.open(path) as im:
            return alpha_channel(im) is not None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        load_image(path)  # raises: the file named, what to do
        raise


def load_image(path: Path, max_side: int = MAX_SIDE, alpha: bool = False) -> Image.Image:
    """Open an image file (a GIF's first frame), decoded at reduced size when it is large (JPEG draft mode, else
    downscaled right after decoding), EXIF orientation applied, as RGB; a clear error if corrupt or too large.
    `alpha`: as RGBA, its transparency kept as the alpha channel (the colours composited on white)."""
    try:
        with Image.open(path) as im:
            if im.format == "JPEG" and max(im.size) > max_side:
                im.draft("RGB", (max_side, max_side))  # the decoder skips detail: a 40 MP photo never lands whole
            im.load()
            image = ImageOps.exif_transpose(im)
            if max(image.size) > max_side:
                image.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
            if not alpha:
                return to_rgb(image)
            alpha_mask = alpha_channel(image)
            if alpha_mask is None:
                raise CdvideoError(f"{path}: has no transparency to take the subject from (masks: alpha); save it "
                                   "as a PNG with a transparent background, or give a folder of masks")
            rgba = to_rgb(image).convert("RGBA")
            rgba.putalpha(alpha_mask)
            return rgba
    except Image.DecompressionBombError as e:
        raise CdvideoError(f"{path}: {e.args[0].split('could be')[0].strip()} is beyond PIL's safety limit; "
                           f"downscale it (at most {Image.MAX_IMAGE_PIXELS * 2 // 10**6} MP) or remove it") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise CdvideoError(f"{path}: cannot be read as an image ({e}); remove or replace the file") from None


def load_folder(folder: str | Path, min_size: int = MIN_SIZE, video_frames: int = 8,
                masks: str | None = None) -> list[Image.Image]:
    """All images of a folder (jpg/png/webp/gif...), sorted by name; other files are skipped with a warning.
    `<base>:<instance>` names a bundled base's photos (`toyworld:striped_ball`); a video file gives its
    `video_frames` sharpest, most distinct frames. `masks`: a folder of subject masks named as the photos (a
    bundled instance's as `<base>:<instance>`), or `alpha`, the photos' own transparency; each photo comes back
    RGBA, its mask as alpha."""
    folder = images_folder(str(folder))
    if folder.is_file() and is_video(folder):
        if masks is not None:
            raise CdvideoError(f"masks {masks}: subject masks go with a folder of photos, not a video ({folder}); "
                               "remove the concept's `masks:`")
        return frames_from_video(folder, video_frames)
    if not folder.is_dir():
        raise CdvideoError(f"image folder {folder} not found; set the concept's `images:` to a folder of photos")
    mask_dir = None if masks in (None, "alpha") else masks_folder(masks)
    if mask_dir is not None and not mask_dir.is_dir():
        raise CdvideoError(f"masks folder {mask_dir} not found; set the concept's `masks:` to a folder of masks named "
                           "as the photos (white where the subject is)")
    mask_files = None if mask_dir is None else {p.stem: p for p in image_files(mask_dir, warn=False)}
    images = []
    for path in image_files(folder):
        image = load_image(path, alpha=masks == "alpha")
        if min(image.size) < min_size:
            raise CdvideoError(
                f"{path}: {image.size[0]}x{image.size[1]} px is smaller than {min_size} px; use a larger photo"
            )
        images.append(image if mask_files is None else with_mask(image, path, mask_dir, mask_files))
    if not images:
        raise CdvideoError(f"image folder {folder} holds no images (jpg, png, webp); add 3-10 photos")
    return images


def image_files(folder: Path, warn: bool = True) -> list[Path]:
    """A folder's image files, sorted by name; other files are skipped (with a warning)."""
    paths = []
    for path in sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")):
        if path.suffix.lower() in IMAGE_SUFFIXES:
            paths.append(path)
        elif warn:
            log.warning("skipping %s: not an image file", path)
    return paths


def with_mask(image: Image.Image, photo: Path, folder: Path, files: dict[str, Path]) -> Image.Image:
    """The photo as RGBA with its subject mask as alpha: the file of the photo's name (any image type; `files`,
    the masks `folder` holds, by stem), white where the subject is."""
    found = files.get(photo.stem)
    if found is None:
        raise CdvideoError(f"{folder}: no mask for the photo {photo.name}; add {photo.stem}.png, white where the "
                           "subject is")
    mask = load_image(found).convert("L")
    (w, h), (pw, ph) = mask.size, image.size
    if abs(w * ph - h * pw) > 0.02 * h * pw:
        raise CdvideoError(f"{found}: {w}x{h} px is not the shape of the photo {photo.name} ({pw}x{ph}); a mask "
                           "covers its whole photo")
    rgba = image.convert("RGBA")
    rgba.putalpha(mask.resize(image.size, Image.Resampling.BILINEAR))
    return rgba


def center_square(image: Image.Image) -> Image.Image:
    w, h = image.size
    s = min(w, h)
    return image.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s))


def pixel_array(image: Image.Image, size: int) -> np.ndarray:
    """(size, size, 3) float32 in [-1, 1] (4 channels for an RGBA photo: its subject mask last)."""
    if image.mode == "RGBA":  # apart: PIL resizes RGBA premultiplied, which blackens the unmasked pixels
        rgb, mask = pixel_array(image.convert("RGB"), size), pixel_array(image.getchannel("A"), size)
        return np.concatenate([rgb, mask[..., None]], axis=-1)
    arr = np.asarray(image.resize((size, size), Image.Resampling.BICUBIC), dtype=np.float32)
    return arr / 127.5 - 1.0


def _box_mask(top: int, left: int, size: int, res: int, factor: int) -> np.ndarray:
    """Latent-resolution mask of a pasted square, shrunk by one latent cell on each side."""
    h = res // factor
    mask = np.zeros((h, h), dtype=np.float32)
    y0, y1 = top // factor + 1, (top + size) // factor - 1
    x0, x1 = left // factor + 1, (left + size) // factor - 1
    if y1 <= y0 or x1 <= x0:  # too small to shrink: the cells it covers whole, else its centre cell
        y0, y1 = -(-top // factor), (top + size) // factor
        x0, x1 = -(-left // factor), (left + size) // factor
        if y1 <= y0 or x1 <= x0:
            y0, x0 = (top + size // 2) // factor, (left + size // 2) // factor
            y1, x1 = y0 + 1, x0 + 1
    mask[y0:y1, x0:x1] = 1.0
    return mask


def augment(image: Image.Image, res: int, factor: int, rng: np.random.Generator,
            scale: bool = True, flip: bool = True) -> tuple[np.ndarray, np.ndarray, str]:
    """Custom Diffusion scale augmentation: (pixels (res, res, 3; 4 with a subject mask), mask (res/f, res/f),
    prompt prefix)."""
    image = center_square(image)
    if flip and rng.random() < 0.5:
        image = ImageOps.mirror(image)
    full_mask = np.ones((res // factor, res // factor), dtype=np.float32)
    if not scale:
        return pixel_array(image, res), full_mask, ""
    if rng.random() < 0.66:  # shrink and paste on a zero canvas
        size = int(rng.integers(res // 3, res + 1))
        size = min(size + size % 2, res)
        top, left = int(rng.integers(0, res - size + 1)), int(rng.integers(0, res - size + 1))
        pasted = pixel_array(image, size)  # (size, size, C): RGB, or RGB and a subject mask
        canvas = np.zeros((res, res, pasted.shape[-1]), dtype=np.float32)
        canvas[top:top + size, left:left + size] = pasted
        prefix = str(rng.choice(["a far away ", "very small "])) if size < 0.6 * res else ""
        return canvas, _box_mask(top, left, size, res, factor), prefix
    size = int(rng.integers(int(1.2 * res), int(1.4 * res) + 1))  # zoom in and random-crop
    top, left = int(rng.integers(0, size - res + 1)), int(rng.integers(0, size - res + 1))
    crop = pixel_array(image, size)[top:top + res, left:left + res]
    return crop, full_mask, str(rng.choice(["zoomed in ", "close up "]))


def subject_weights(pixels: np.ndarray, box: np.ndarray, factor: int, unmasked: float) -> tuple[np.ndarray,
                                                                                                  np.ndarray]:
    """Augmented pixels (res, res, 3 or 4) and their box mask (res/f, res/f) -> RGB pixels and the loss weights:
    the box mask, times 1 on the subject and `unmasked` elsewhere (the 4th channel, its mask, averaged over each
    latent cell; kohya's masked loss at 0, OneTrainer's unmasked weight)."""
    if pixels.shape[-1] == 3:
        return pixels, box
    h = box.shape[0]
    cover = np.clip((pixels[:h * factor, :h * factor, 3] + 1) / 2, 0, 1)  # (res, res)
    cover = cover.reshape(h, factor, h, factor).mean(axis=(1, 3))  # (res/f, res/f)
    return pixels[..., :3], box * (unmasked + (1 - unmasked) * cover)


@dataclass
class Concept:
    token: str
    class_word: str
    images: list[Image.Image]  # RGB; RGBA with a subject mask as alpha (`load_folder(masks=...)`)
    prompt: str  # instance prompt, e.g. "photo of a sks dog"
    class_images: list[Image.Image] | None = None
    class_prompt: str = ""
    unmasked_weight: float = 1.0  # the loss's weight off the subject, for photos with a subject mask


def sample_batch(concepts: list[Concept], batch_size: int, step: int, rng: np.random.Generator, res: int,
                 factor: int, scale: bool, flip: bool) -> dict:
    """One batch, concepts drawn in turn so that each gets an equal share of the steps."""
    pixels, masks, prompts, cls_pixels, cls_prompts = [], [], [], [], []
    for i in range(batch_size):
        c = concepts[(step * batch_size + i) % len(concepts)]
        px, mask, prefix = augment(c.images[int(rng.integers(len(c.images)))], res, factor, rng, scale, flip)
        px, mask = subject_weights(px, mask, factor, c.unmasked_weight)
        pixels.append(px)
        masks.append(mask)
        prompts.append(prefix + c.prompt)
        if c.class_images:
            cls = center_square(c.class_images[int(rng.integers(len(c.class_images)))])
            cls_pixels.append(pixel_array(cls, res))
            cls_prompts.append(c.class_prompt)
    batch = {
        "pixels": torch.from_numpy(np.stack(pixels)).permute(0, 3, 1, 2),  # (B, 3, H, W)
        "mask": torch.from_numpy(np.stack(masks))[:, None],  # (B, 1, h, w)
        "prompts": prompts,
    }
    if cls_pixels:
        batch["class_pixels"] = torch.from_numpy(np.stack(cls_pixels)).permute(0, 3, 1, 2)
        batch["class_prompts"] = cls_prompts
    return batch
