"""A line echo server and a client, in the callback style, on one IOLoop.

Everything runs on 127.0.0.1 with a port the OS picks, so this file runs
anywhere as it is: ``python docs/examples/echo_callbacks.py``.
"""

from __future__ import annotations

import socket

from iostream import IOLoop, IOStream, TCPServer

loop = IOLoop()  # the best poller here, or IOSTREAM_POLLER's choice


def handle_stream(stream: IOStream, address: object) -> None:
    """Serve one connection: send every line back until the client leaves."""

    def on_line(line: bytes) -> None:
        stream.write(line.upper())
        stream.read_until(b"\n", on_line)

    stream.read_until(b"\n", on_line)


server = TCPServer(handle_stream, io_loop=loop)
port = server.listen(0)  # 0: any free port; listen() returns the one it got

client = IOStream(socket.socket(), io_loop=loop)
replies: list[bytes] = []


def on_close() -> None:
    # Runs exactly once, however the stream ends; `error` says why
    # (None after a clean close).
    if client.error is not None:
        print(f"connection failed: {client.error}")
    loop.stop()


def on_connect() -> None:
    client.write(b"hello\nworld\n")
    client.read_until(b"\n", on_reply)


def on_reply(line: bytes) -> None:
    replies.append(line)
    if len(replies) < 2:
        client.read_until(b"\n", on_reply)
    else:
        client.close()  # runs on_close, which stops the loop


client.set_close_callback(on_close)
client.connect(("127.0.0.1", port), on_connect)
loop.start()

server.stop()
loop.close(all_fds=True)
print(replies)

# expected output:
# [b'HELLO\n', b'WORLD\n']
