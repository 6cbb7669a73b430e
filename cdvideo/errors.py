"""User-facing errors: the CLI prints them as one line, without a traceback."""


class CdvideoError(Exception):
    """A mistake in the user's input or environment, explained in one line."""


class NotCdvideoWeights(CdvideoError):
    """A readable safetensors file that is not a cdvideo weights file (another tool's LoRA, embedding...)."""
