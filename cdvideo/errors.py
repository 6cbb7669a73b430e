"""User-facing errors: the CLI prints them as one line, without a traceback."""


class CdvideoError(Exception):
    """A mistake in the user's input or environment, explained in one line."""


class NotCdvideoWeights(CdvideoError):
    """A readable safetensors file that is not a cdvideo weights file (another tool's LoRA, embedding...)."""


def first_line(e: BaseException, limit: int | None = None) -> str:
    """An exception's first line of text (its type's name when it has none), cut to `limit` characters: what a
    one-line error quotes of a library's exception."""
    text = str(e).strip()
    return text.splitlines()[0][:limit] if text else type(e).__name__
