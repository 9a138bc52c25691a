"""Report a failed connect instead of waiting forever.

A refused, unreachable or timed-out connect closes the stream with
``stream.error`` set to the ``OSError``; the connect callback never runs,
but the close callback does. A timer bounds the wait.
"""

from __future__ import annotations

import socket

from iostream import IOLoop, IOStream

loop = IOLoop()

# A port with nothing listening: bind one, note its number, close it.
with socket.socket() as probe:
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]

stream = IOStream(socket.socket(), io_loop=loop)


def on_connect() -> None:
    print("connected (unexpected: nothing listens there)")
    stream.close()


def on_close() -> None:
    loop.remove_timeout(give_up)
    print(f"connect failed: {type(stream.error).__name__}")
    loop.stop()


def on_timeout() -> None:
    print("connect timed out")
    stream.close()


give_up = loop.call_later(10, on_timeout)
stream.set_close_callback(on_close)
stream.connect(("127.0.0.1", port), on_connect)
loop.start()
loop.close(all_fds=True)

# expected output:
# connect failed: ConnectionRefusedError
