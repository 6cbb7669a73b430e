"""Pipelines composed from loaded components: diffusers' StableDiffusionPipeline and AnimateDiffPipeline, never
subclassed."""

from __future__ import annotations

from cdvideo.models.single_file import check_adapter_fits


def video_pipeline(m: dict, adapter, scheduler, adapter_name: str = "adapter", base: str = "base", unet=None,
                   video_to_video: bool = False, controlnets: list | None = None, sparsectrl=None, ip_adapter=None,
                   ip_adapter_scale: float = 1.0):
    """diffusers' AnimateDiff pipeline for the task (text or video to video, with ControlNets or without, an image
    prompt through `ip_adapter` or not) over the (personalized) 2D UNet; it builds the UNetMotionModel (or takes
    `unet`, one built already, e.g. the one a motion LoRA trains)."""
    import diffusers  # lazy: start-up time

    if unet is None:
        check_adapter_fits(adapter, m["unet"], adapter_name, base)
    name = {(False, False): "AnimateDiffPipeline", (True, False): "AnimateDiffVideoToVideoPipeline",
            (False, True): "AnimateDiffControlNetPipeline",
            (True, True): "AnimateDiffVideoToVideoControlNetPipeline"}[video_to_video, bool(controlnets)]
    extra = {"controlnet": controlnets if len(controlnets) > 1 else controlnets[0]} if controlnets else {}
    if sparsectrl is not None:  # SparseCtrl: keyframes through its own ControlNet (text to video only)
        name, extra = "AnimateDiffSparseControlNetPipeline", {"controlnet": sparsectrl}
    if ip_adapter is not None:  # the image encoder and its processor are the pipeline's own components
        extra.update(image_encoder=ip_adapter.image_encoder, feature_extractor=ip_adapter.feature_extractor)
    pipe = getattr(diffusers, name)(vae=m["vae"], text_encoder=m["text_encoder"], tokenizer=m["tokenizer"],
                                    unet=unet if unet is not None else m["unet"], motion_adapter=adapter,
                                    scheduler=scheduler, **extra)
    if ip_adapter is not None:  # diffusers' own loader, given the weights already read and checked
        pipe.load_ip_adapter(ip_adapter.state, subfolder="", weight_name="")
        pipe.set_ip_adapter_scale(ip_adapter_scale)
    return pipe


def motion_unet(m: dict, adapter, adapter_name: str = "adapter", base: str = "base"):
    """The UNetMotionModel of the base's 2D UNet and a motion adapter (what AnimateDiffPipeline renders with)."""
    from diffusers import UNetMotionModel  # lazy: start-up time

    check_adapter_fits(adapter, m["unet"], adapter_name, base)
    return UNetMotionModel.from_unet2d(m["unet"], adapter)


def image_pipeline(m: dict, unet=None, text_encoder=None, scheduler=None):
    """A StableDiffusionPipeline over components `m`, with optional replacements; no safety checker."""
    from diffusers import DPMSolverMultistepScheduler, StableDiffusionPipeline  # lazy: start-up time

    pipe = StableDiffusionPipeline(
        vae=m["vae"], text_encoder=text_encoder or m["text_encoder"], tokenizer=m["tokenizer"],
        unet=unet or m["unet"],
        scheduler=scheduler or DPMSolverMultistepScheduler.from_config(m["scheduler"].config),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe
