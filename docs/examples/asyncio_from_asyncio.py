"""IOStream inside an asyncio program, next to asyncio's own streams.

``IOLoop.from_asyncio()`` gives the IOLoop interface on the running
asyncio loop; streams made on it return ``asyncio.Future`` objects.
"""

from __future__ import annotations

import asyncio
import socket

from iostream import IOLoop, IOStream


async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    line = await reader.readline()
    writer.write(line.upper())
    await writer.drain()
    writer.close()


async def main() -> bytes:
    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    io_loop = IOLoop.from_asyncio()  # the running asyncio loop
    stream = IOStream(socket.socket(), io_loop=io_loop)
    await stream.connect(("127.0.0.1", port))
    await stream.write(b"from iostream\n")
    reply: bytes = await stream.read_until(b"\n")
    stream.close()
    server.close()
    await server.wait_closed()
    return reply


print(asyncio.run(main()))

# expected output:
# b'FROM IOSTREAM\n'
