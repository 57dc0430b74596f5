"""The one error type every mnt stage derives from; the CLIs catch it once."""

from __future__ import annotations


class MntError(Exception):
    """A failure the user can act on: ``str(err)`` is one line naming the bad input,
    ``hint`` (optional) says how to fix it."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint

    def one_line(self) -> str:
        text = str(self)
        return f"{text} ({self.hint})" if self.hint else text


class RuntimeStageError(MntError):
    """Raised by mnt.runtime: bad artefacts, images, videos or landmarks."""
