"""The exceptions a stream raises, or fails its Futures with."""

from __future__ import annotations

__all__ = ["StreamBufferFullError", "StreamClosedError", "UnsatisfiableReadError"]


class StreamClosedError(OSError):
    """The stream is closed; ``real_error`` is what closed it (or None)."""

    def __init__(self, message: str = "Stream is closed", real_error: BaseException | None = None):
        super().__init__(message)
        #: The exception that closed the stream, if any.
        self.real_error = real_error


class StreamBufferFullError(Exception):
    """A read or write buffer reached its maximum size."""


class UnsatisfiableReadError(Exception):
    """A read cannot be satisfied (a delimiter or pattern past ``max_bytes``)."""
