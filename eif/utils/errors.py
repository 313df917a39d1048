"""User-facing errors.

Anything the user can fix (missing data, bad config values, a checkpoint that does not match)
raises :class:`EifError`. ``launch.py`` prints its message as one line and exits non-zero,
without a traceback.
"""


class EifError(Exception):
    """An error caused by user input; its message is shown as one line."""


def require(condition: bool, message: str) -> None:
    """Raise :class:`EifError` with ``message`` unless ``condition`` holds."""
    if not condition:
        raise EifError(message)
