"""The same line echo server and client, written with ``async``/``await``.

Every stream method returns an awaitable Future when it is given no
callback; ``IOLoop.run_sync`` runs a coroutine to completion on the
loop. No asyncio event loop is involved.
"""

from __future__ import annotations

import socket

from iostream import IOLoop, IOStream, StreamClosedError, TCPServer


class UpperServer(TCPServer):
    """Send every line back in upper case until the client leaves."""

    async def handle_stream(self, stream: IOStream, address: object) -> None:
        try:
            while True:
                line = await stream.read_until(b"\n")
                await stream.write(line.upper())
        except StreamClosedError:
            pass  # the client left: nothing to clean up


async def main() -> list[bytes]:
    server = UpperServer()
    port = server.listen(0)
    stream = IOStream(socket.socket())
    await stream.connect(("127.0.0.1", port))
    await stream.write(b"hello\nworld\n")
    replies = [await stream.read_until(b"\n"), await stream.read_until(b"\n")]
    stream.close()
    server.stop()
    return replies


loop = IOLoop()
loop.make_current()
print(loop.run_sync(main, timeout=30))
loop.close(all_fds=True)

# expected output:
# [b'HELLO\n', b'WORLD\n']
