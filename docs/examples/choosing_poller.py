"""Which pollers exist here, and the same tiny exchange on each of them."""

from __future__ import annotations

import socket

from iostream import IOLoop, IOStream, pollers

chosen = pollers.choose()  # IOSTREAM_POLLER if set, else the best available here
print("the choice is available:", chosen.name in pollers.available())

for name in pollers.available():
    loop = IOLoop(name)  # a name, a preference list "kqueue,poll", or None
    a, b = socket.socketpair()
    stream = IOStream(a, io_loop=loop)
    got: list[bytes] = []

    def on_data(data: bytes, loop: IOLoop = loop, got: list[bytes] = got) -> None:
        got.append(data)
        loop.stop()

    stream.read_bytes(5, on_data)
    b.sendall(b"ping!")
    loop.start()
    stream.close()
    b.close()
    loop.close()
    assert got == [b"ping!"], (name, got)
    assert loop.poller.name == name

print("every poller moved the bytes")

# expected output:
# the choice is available: True
# every poller moved the bytes
