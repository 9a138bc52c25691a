"""PipeIOStream: the stream API on a pipe (or any non-socket fd the poller takes).

POSIX only: Windows' pipes cannot be polled by select or by any poller
here, so the constructor raises :class:`ValueError` there.
"""

from __future__ import annotations

import os
from typing import Any

from iostream._platform import _WINDOWS, is_would_block
from iostream.ioloop import IOLoop
from iostream.stream import BaseIOStream

__all__ = ["PipeIOStream"]


class PipeIOStream(BaseIOStream):
    """A stream on a pipe fd: ``PipeIOStream(fd, io_loop=None, **options)``.

    *fd* is an int, or an object with ``fileno()`` (a file object); the
    stream makes it non-blocking and owns it (closing the stream closes
    it). The options are :class:`~iostream.stream.BaseIOStream`'s. One
    stream per direction: the read end of a pipe gets reads, the write
    end writes. The writer closing is the reader's EOF, as for a socket.
    """

    def __init__(self, fd: int | Any, io_loop: IOLoop | None = None, **options: Any) -> None:
        if _WINDOWS:
            raise ValueError(
                "PipeIOStream needs POSIX pipes: Windows pipes cannot be polled "
                "(use a socket pair instead)"
            )
        owner = None
        if not isinstance(fd, int):
            if not hasattr(fd, "fileno"):
                raise TypeError(f"fd must be an int or have fileno(), not {type(fd).__name__}")
            owner = fd
            fd = fd.fileno()
        if isinstance(fd, bool) or not isinstance(fd, int) or fd < 0:
            raise ValueError(f"fd must be an open file descriptor (an int >= 0), got {fd!r}")
        try:
            os.set_blocking(fd, False)
        except OSError as exc:
            raise ValueError(f"fd {fd} is not an open file descriptor: {exc}") from exc
        super().__init__(io_loop, **options)
        self._fd = fd
        self._owner = owner
        self._peer = "pipe"
        # A write end: never read ahead for a close callback (reading it
        # fails with EBADF), and its hang-up (the reader gone) closes it.
        self._readable = _access_mode(fd) != os.O_WRONLY

    def close_fd(self) -> None:
        """Close the fd (through the file object, if one was given)."""
        if self._owner is not None:
            self._owner.close()
        else:
            os.close(self._fd)

    def read_from_fd(self, view: memoryview) -> int | None:
        """``readv`` into *view*: the count, 0 at EOF, None if it would block."""
        while True:
            try:
                return os.readv(self._fd, [view])
            except InterruptedError:
                continue
            except OSError as exc:
                if is_would_block(exc):
                    return None
                raise

    def write_to_fd(self, view: memoryview) -> int:
        """``write`` from *view*: the count, 0 if it would block."""
        while True:
            try:
                return os.write(self._fd, view)
            except InterruptedError:
                continue
            except OSError as exc:
                if is_would_block(exc):
                    return 0
                raise


def _access_mode(fd: int) -> int:
    """``O_RDONLY``, ``O_WRONLY`` or ``O_RDWR``: how *fd* was opened."""
    import fcntl  # POSIX only, as PipeIOStream is

    return fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE
