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


class NothingToExplain(Exception):
    """A stage found no work of its kind (e.g. a model whose every test 1-NN is right has no confusions):
    a result, not an error. The pipeline notes the message, and skips the stages that read this one."""


class JobExit(SystemExit):
    """The job ends with exit ``code`` after printing ``message`` as its one ``error:`` line."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(code)
        self.message = message
