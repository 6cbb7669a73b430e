"""Feature extractors for `cdvideo eval`, loaded through transformers (hub id, local folder, or `tiny`)."""

from __future__ import annotations

import torch
from PIL import Image

from cdvideo.errors import CdvideoError
from cdvideo.models import architectures as tiny
from cdvideo.models.loading import load_error

DEFAULTS = {"clip": "openai/clip-vit-base-patch32", "dino": "facebook/dino-vits16",
            "blip": "Salesforce/blip-itm-large-coco"}


def _tensor(out) -> torch.Tensor:
    """transformers 4 returns features, 5 an output whose pooler_output holds them."""
    return out if isinstance(out, torch.Tensor) else out.pooler_output


class _Extractor:
    """A transformers model with its processor; subclasses turn images/texts into feature tensors."""

    def __init__(self, model, processor, device="cpu"):
        self.model, self.processor, self.device = model.to(device).eval(), processor, device

    def _pixels(self, images: list[Image.Image]) -> torch.Tensor:
        px = self.processor(images=images, return_tensors="pt")["pixel_values"]
        return px.to(self.device, self.model.dtype)

    def _tokens(self, texts: list[str]):
        return self.processor(text=texts, padding=True, truncation=True, return_tensors="pt").to(self.device)


class Clip(_Extractor):
    """CLIP image and text embeddings (projected)."""

    @torch.no_grad()
    def images(self, images: list[Image.Image]) -> torch.Tensor:
        return _tensor(self.model.get_image_features(pixel_values=self._pixels(images))).float().cpu()

    @torch.no_grad()
    def texts(self, texts: list[str]) -> torch.Tensor:
        return _tensor(self.model.get_text_features(**self._tokens(texts))).float().cpu()


class Dino(_Extractor):
    """DINO ViT CLS features of the last layer."""

    @torch.no_grad()
    def images(self, images: list[Image.Image]) -> torch.Tensor:
        return self.model(pixel_values=self._pixels(images)).last_hidden_state[:, 0].float().cpu()


class Blip(_Extractor):
    """BLIP image-text contrastive (ITC) features: vision_proj / text_proj of the CLS tokens, no ITM head."""

    @torch.no_grad()
    def images(self, images: list[Image.Image]) -> torch.Tensor:
        cls = self.model.vision_model(pixel_values=self._pixels(images)).last_hidden_state[:, 0]
        return self.model.vision_proj(cls).float().cpu()

    @torch.no_grad()
    def texts(self, texts: list[str]) -> torch.Tensor:
        t = self._tokens(texts)
        cls = self.model.text_encoder(input_ids=t["input_ids"], attention_mask=t["attention_mask"]).last_hidden_state
        return self.model.text_proj(cls[:, 0]).float().cpu()


class Blip2(_Extractor):
    """BLIP-2 ITC features: per-image query embeddings (N, Q, D) and text embeddings (N, D)."""

    @torch.no_grad()
    def images(self, images: list[Image.Image]) -> torch.Tensor:
        m = self.model
        embeds = m.vision_model(pixel_values=self._pixels(images)).last_hidden_state
        query = m.query_tokens.expand(embeds.shape[0], -1, -1)
        mask = torch.ones(embeds.shape[:-1], dtype=torch.long, device=embeds.device)
        out = m.qformer(query_embeds=query, encoder_hidden_states=embeds, encoder_attention_mask=mask)
        return m.vision_projection(out.last_hidden_state).float().cpu()

    @torch.no_grad()
    def texts(self, texts: list[str]) -> torch.Tensor:
        m, t = self.model, self._tokens(texts)
        out = m.qformer(query_embeds=m.embeddings(input_ids=t["input_ids"]), query_length=0,
                        attention_mask=t["attention_mask"])
        return m.text_projection(out.last_hidden_state[:, 0]).float().cpu()


def load(kind: str, ref: str | None, device: str = "cpu"):
    """An extractor of `kind` (clip, dino, blip) from a hub id or folder; `tiny` (or `tiny-blip2`) builds a
    random one."""
    ref = ref or DEFAULTS[kind]
    if kind == "blip" and ref == "tiny-blip2":
        return Blip2(*tiny.blip2_model(), device)
    if ref == tiny.TINY_ID:
        model, processor = {"clip": tiny.clip_model, "dino": tiny.dino_model, "blip": tiny.blip_model}[kind]()
        return {"clip": Clip, "dino": Dino, "blip": Blip}[kind](model, processor, device)
    import transformers as tf  # lazy: start-up time

    classes = {"clip": ("CLIPModel", "CLIPProcessor", Clip), "dino": ("ViTModel", "ViTImageProcessor", Dino),
               "blip": ("BlipForImageTextRetrieval", "BlipProcessor", Blip)}
    model_cls, proc_cls, wrapper = classes[kind]
    if kind == "blip" and "blip2" in ref.lower():
        model_cls, proc_cls, wrapper = "Blip2ForImageTextRetrieval", "Blip2Processor", Blip2
    try:
        model = getattr(tf, model_cls).from_pretrained(ref)
        processor = getattr(tf, proc_cls).from_pretrained(ref)
    except (OSError, ValueError) as e:
        raise load_error(ref, e) from None
    if kind == "dino" and not isinstance(model, tf.ViTModel):
        raise CdvideoError(f"{ref}: not a ViT model for DINO features")
    return wrapper(model, processor, device)
