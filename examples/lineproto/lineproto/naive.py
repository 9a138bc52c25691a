"""The naive version: correct-looking, and wrong twice.

1. ``send_line`` assumes ``send`` sends everything at once. It may send part
   (POSIX allows it), refuse with would-block or EINTR, or, on Windows, fail
   a large non-blocking send outright (what Tornado saw; the WindowsSocket
   stand-in raises WSAENOBUFS).
2. ``_on_readable`` assumes one ``recv`` returns one whole message. TCP is a
   byte stream: a ``recv`` may return part of a line, or several lines.

Loopback TCP on Linux almost never shows either, so its tests pass there.
"""

from __future__ import annotations

import socket
from collections.abc import Callable

from iostream import READ, IOLoop


class LineConnection:
    """Send and receive newline-terminated messages on a connected socket."""

    def __init__(
        self, sock: socket.socket, io_loop: IOLoop, on_line: Callable[[bytes], object]
    ) -> None:
        sock.setblocking(False)
        self.sock = sock
        self.io_loop = io_loop
        self.on_line = on_line
        self.closed = False
        io_loop.add_handler(sock, self._on_readable, READ)

    def send_line(self, line: bytes) -> None:
        """Send *line* (without its newline)."""
        self.sock.send(line + b"\n")  # BUG: the return value is ignored

    def _on_readable(self, fd: object, events: int) -> None:
        data = self.sock.recv(1 << 20)  # BUG: one recv is taken as one message
        if not data:
            self.close()
            return
        self.on_line(data.rstrip(b"\n"))

    def close(self) -> None:
        """Stop watching the socket and close it."""
        if not self.closed:
            self.closed = True
            self.io_loop.remove_handler(self.sock)
            self.sock.close()
