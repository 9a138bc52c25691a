"""An ordinary asyncio program on an iostream poller of your choice.

``iostream.asyncio.run`` is ``asyncio.run`` with the event loop's selector
replaced by one over iostream's pollers (``poller=None``: the default, or
``IOSTREAM_POLLER``). ``python -m iostream run script.py`` does the same
for a script you do not want to touch.
"""

from __future__ import annotations

import asyncio

import iostream.asyncio


async def main() -> str:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(await reader.readline())
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"over select\n")
    line = await reader.readline()
    writer.close()
    server.close()
    await server.wait_closed()
    return line.decode().strip()


print(iostream.asyncio.run(main(), poller="select"))

# expected output:
# over select
