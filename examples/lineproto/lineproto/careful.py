"""The careful version: buffers in both directions.

* Outgoing bytes go to a buffer. Each ``send`` gets at most ``CHUNK`` bytes
  (well under the 128 KiB Tornado caps Windows sends at), and whatever it does not take stays
  queued; the socket is watched for writability while anything is.
  Would-block and WSAENOBUFS/ENOBUFS mean "later"; EINTR means "again".
* Incoming bytes go to a buffer too; each complete line in it is one
  message, however the bytes were split across ``recv`` calls.
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Callable

from iostream import READ, WRITE, IOLoop

#: The most bytes handed to one ``send`` (Tornado saw Windows fail larger
#: non-blocking sends outright instead of sending part; the WindowsSocket
#: stand-in does that with WSAENOBUFS).
CHUNK = 64 * 1024

#: "No buffer space": ENOBUFS (BSDs, when short of mbufs) and WSAENOBUFS.
NO_BUFFER_SPACE = frozenset({errno.ENOBUFS, 10055})

#: The longest line accepted; a peer sending more is cut off.
MAX_LINE = 1 << 20


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
        self.error: OSError | None = None
        self._out = bytearray()
        self._in = bytearray()
        self._events = READ
        io_loop.add_handler(sock, self._on_events, READ)

    def send_line(self, line: bytes) -> None:
        """Queue *line* (without its newline) and send what the socket takes now."""
        if b"\n" in line:
            raise ValueError("line must not contain a newline")
        self._out += line + b"\n"
        self._flush()

    def _flush(self) -> None:
        while self._out and not self.closed:
            try:
                sent = self.sock.send(bytes(self._out[:CHUNK]))
            except InterruptedError:
                continue  # EINTR: nothing was sent; try again
            except BlockingIOError:
                break  # full: wait until writable
            except OSError as exc:
                code = getattr(exc, "winerror", None) or exc.errno
                if code in NO_BUFFER_SPACE:
                    break  # no buffer space now: wait until writable
                self.close(exc)
                return
            del self._out[:sent]
        self._watch()

    def _on_events(self, fd: object, events: int) -> None:
        if events & WRITE:
            self._flush()
        if events & READ and not self.closed:
            self._on_readable()

    def _on_readable(self) -> None:
        while True:
            try:
                data = self.sock.recv(CHUNK)
            except InterruptedError:
                continue
            except BlockingIOError:
                return  # nothing after all: wait for the next readiness
            except OSError as exc:
                self.close(exc)
                return
            break
        if not data:
            self.close()
            return
        self._in += data
        while not self.closed:
            end = self._in.find(b"\n")
            if end < 0:
                break
            line = bytes(self._in[:end])
            del self._in[: end + 1]
            self.on_line(line)
        if len(self._in) > MAX_LINE:
            self.close(OSError(errno.EMSGSIZE, f"line longer than {MAX_LINE} bytes"))

    def _watch(self) -> None:
        if self.closed:
            return
        events = READ | WRITE if self._out else READ
        if events != self._events:
            self._events = events
            self.io_loop.update_handler(self.sock, events)

    def close(self, error: OSError | None = None) -> None:
        """Stop watching the socket and close it (*error*: why, kept in ``error``)."""
        if not self.closed:
            self.closed = True
            self.error = error
            self.io_loop.remove_handler(self.sock)
            self.sock.close()
