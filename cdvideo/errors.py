"""User-facing errors: the CLI prints them as one line, without a traceback."""


class CdvideoError(Exception):
    """A mistake in the user's input or environment, explained in one line."""
