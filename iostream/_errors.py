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


class _ReadClosedError(StreamClosedError):
    """Base of the errors a read's Future fails with when that read closed
    the stream: a :class:`StreamClosedError` (as Tornado's Futures fail)
    that is also the read's own error class, so either ``except`` works.
    ``real_error`` is the original :class:`UnsatisfiableReadError` or
    :class:`StreamBufferFullError`."""


class UnsatisfiableReadClosedError(_ReadClosedError, UnsatisfiableReadError):
    """A read's Future: its delimiter or pattern was not within ``max_bytes``."""


class StreamBufferFullClosedError(_ReadClosedError, StreamBufferFullError):
    """A read's Future: its data did not fit in ``max_buffer_size``."""


def read_closed_error(exc: BaseException) -> StreamClosedError:
    """What the Future of the read that closed a stream with *exc* fails with."""
    if isinstance(exc, UnsatisfiableReadError):
        return UnsatisfiableReadClosedError(str(exc), real_error=exc)
    if isinstance(exc, StreamBufferFullError):
        return StreamBufferFullClosedError(str(exc), real_error=exc)
    return StreamClosedError(real_error=exc)
