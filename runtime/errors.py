"""The one error type every mnt stage derives from; the CLIs catch it once."""

from __future__ import annotations

import re

_ERRNO = re.compile(r"\[Errno -?\d+\] ")


class MntError(Exception):
    """A failure the user can act on: ``str(err)`` is one line naming the bad input,
    ``hint`` (optional) says how to fix it."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint

    def one_line(self) -> str:
        # (an OSError or FFmpeg error in the text says "[Errno 1094995529] Invalid data ...":
        # the number is FFmpeg's tag for the words after it, noise to a reader)
        text = _ERRNO.sub("", str(self))
        return f"{text} ({self.hint})" if self.hint else text


class RuntimeStageError(MntError):
    """Raised by mnt.runtime: bad artefacts, images, videos or landmarks."""
