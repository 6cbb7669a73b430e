"""cdvideo: ClassDiffusion personalization of Stable Diffusion 1.5, rendered as video through AnimateDiff."""

__version__ = "0.1.0"
