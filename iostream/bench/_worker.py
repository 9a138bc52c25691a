"""The worker processes of a benchmark run: ``python -m iostream.bench._worker '<json>'``.

The JSON object's ``role`` picks what the process is:

- ``receive``: a peer reading a one-way workload (it listens, accepts one
  connection, runs the phases, checks every byte, reports the times);
- ``send``: the raw sender of a one-way workload;
- ``write``: the peer's own client of an ``own-*`` workload (it connects
  with the library and writes the payload in 64 KiB ``write()`` calls);
- ``serve``: a peer's echo server (it answers ``stat`` on stdin with its
  connection count and RSS, and exits at stdin EOF);
- ``client``: the shared echo client.

Each prints ``READY``/``HELD``/``STAT`` lines as it goes, then ``RESULT`` on
success or ``ERROR`` on failure (exit status 1). The connecting roles (``send``,
``write``, ``client``) may be started before the port is known (``"port":
null``): the harness then writes ``port N`` on their stdin once the other
side listens, so their start-up overlaps the listener's.
"""

from __future__ import annotations

import cProfile
import gc
import json
import os
import signal
import socket
import sys
import threading
import time
from typing import Any

from iostream.bench import _client, _jobs, _sender, _tls
from iostream.bench._config import Sizes
from iostream.bench._payload import VerificationError
from iostream.bench._peers import BenchError, ServerStats, make_peer
from iostream.bench._proc import emit, raise_nofile, rss_kib


def _port(spec: dict[str, Any]) -> int:
    """The port to connect to: in the spec, or the ``port N`` line the harness writes."""
    if spec.get("port") is not None:
        return int(spec["port"])
    line = sys.stdin.readline().split()
    if len(line) != 2 or line[0] != "port":
        raise BenchError(f"expected 'port N' on stdin, got {' '.join(line)!r}")
    return int(line[1])


def _cert(spec: dict[str, Any]) -> _tls.CertFiles | None:
    cert = spec.get("cert")
    return _tls.CertFiles(**cert) if cert else None


def receive(spec: dict[str, Any]) -> dict[str, Any]:
    """Role ``receive``: accept one connection and read the workload with the peer."""
    peer = make_peer(spec["peer"], spec.get("poller"))
    sizes = Sizes.from_json(spec["sizes"])
    specs = _jobs.phases_for(spec["workload"], sizes)
    phases, clocks = _jobs.read_phases(specs, peer.keeps_delimiter, spec.get("cache_dir"))
    cert = _cert(spec)
    tls = _tls.server_context(cert) if cert else None
    with socket.create_server(("127.0.0.1", 0)) as listener:
        emit("READY", {"port": listener.getsockname()[1]})
        listener.settimeout(sizes.timeout)
        sock, _ = listener.accept()
    sock.setblocking(False)
    gc.collect()
    profile = _Profile(spec.get("profile"))
    profile.start()
    peer.receive(sock, tls, phases, sizes.timeout)
    profile.stop()
    results: dict[str, Any] = {}
    for clock in clocks:
        clock.sink.finish()
        if clock.spec.label:
            results[clock.spec.label] = {
                "seconds": clock.seconds(),
                "bytes": clock.spec.total,
                "items": clock.spec.count,
            }
    return {"phases": results, "label": peer.label}


def send(spec: dict[str, Any]) -> dict[str, Any]:
    """Role ``send``: the raw sender."""
    sizes = Sizes.from_json(spec["sizes"])
    sent, busy = _sender.send(
        _port(spec), spec["workload"], sizes, _cert(spec), spec.get("cache_dir"), sizes.timeout
    )
    return {"sent": sent, "sender_cpu": busy}


def write(spec: dict[str, Any]) -> dict[str, Any]:
    """Role ``write``: the peer's own client, writing the payload of an ``own-*`` part.

    Reports the bytes written per phase, and per phase the CPU seconds the
    process used from the ``go`` bytes to the last chunk and the share of a
    core that is (near 1.0: this client, not the receiver, set the pace).
    """
    peer = make_peer(spec["peer"], spec.get("poller"))
    sizes = Sizes.from_json(spec["sizes"])
    specs = _jobs.phases_for(spec["workload"], sizes)
    cache_dir = spec.get("cache_dir")
    sent: dict[str, int] = {}
    cpu: dict[str, float] = {}
    busy: dict[str, float] = {}
    faults: list[str] = []
    phases = [_write_phase(s, cache_dir, sent, cpu, busy, faults) for s in specs]
    gc.collect()
    profile = _Profile(spec.get("profile"))
    profile.start()
    port = _port(spec)
    peer.send(port, phases, sizes.timeout)
    profile.stop()
    if faults:
        raise BenchError(faults[0])
    return {"sent": sent, "sender_cpu": busy, "sender_cpu_seconds": cpu}


def _write_phase(
    spec: _jobs.PhaseSpec,
    cache_dir: str | None,
    sent: dict[str, int],
    cpu: dict[str, float],
    busy: dict[str, float],
    faults: list[str],
) -> _jobs.WritePhase:
    label = spec.label or "hello"
    chunks = _jobs.own_chunks(spec, cache_dir)
    marks: list[float] = []

    def check_go(data: bytes) -> None:
        if data != spec.go:
            faults.append(f"phase {label!r}: wrong 'go' bytes {data!r}")

    def begin() -> None:
        marks[:] = [time.perf_counter(), time.process_time()]

    def end() -> None:
        wall, used = time.perf_counter() - marks[0], time.process_time() - marks[1]
        sent[label] = sum(len(chunk) for chunk in chunks)
        cpu[label] = used
        busy[label] = used / wall if wall > 0 else 0.0

    return _jobs.WritePhase(spec.go, chunks, check_go, begin, end)


def serve(spec: dict[str, Any]) -> dict[str, Any]:
    """Role ``serve``: run the peer's echo server until stdin closes."""
    raise_nofile()
    peer = make_peer(spec["peer"], spec.get("poller"))
    stats = ServerStats()
    profile = _Profile(spec.get("profile"))

    def ready(port: int) -> None:
        gc.collect()
        emit("READY", {"port": port, "rss_kib": rss_kib(), "label": peer.label})
        threading.Thread(target=_control, args=(stats, profile), daemon=True).start()
        profile.start()

    peer.serve(stats, ready)
    raise BenchError("the echo server stopped on its own")


def _control(stats: ServerStats, profile: _Profile) -> None:
    """Answer ``stat`` lines on stdin; end the process at EOF."""
    for line in sys.stdin:
        if line.strip() == "stat":
            gc.collect()
            emit("STAT", {"accepted": stats.accepted, "rss_kib": rss_kib()})
    sys.stdout.flush()
    if profile.active and hasattr(signal, "SIGUSR1"):
        # The profiler lives in the loop's thread: a signal makes that thread
        # save it and exit (see _Profile.start); this thread only waits.
        os.kill(os.getpid(), signal.SIGUSR1)
        time.sleep(30)
    os._exit(0)


class _Profile:
    """cProfile around the peer's side of a run, saved to *path* (``--profile``)."""

    def __init__(self, path: str | None) -> None:
        self.path = path
        self._profiler = cProfile.Profile() if path else None

    @property
    def active(self) -> bool:
        """Whether this run is profiled."""
        return self._profiler is not None

    def start(self) -> None:
        """Start profiling this thread; a SIGUSR1 saves the profile and ends the process."""
        if self._profiler is None:
            return
        if hasattr(signal, "SIGUSR1"):
            signal.signal(signal.SIGUSR1, self._save_and_exit)
        self._profiler.enable()

    def stop(self) -> None:
        """Stop profiling and save the profile."""
        if self._profiler is not None and self.path is not None:
            self._profiler.disable()
            self._profiler.dump_stats(self.path)

    def _save_and_exit(self, signum: int, frame: object) -> None:
        self.stop()
        sys.stdout.flush()
        os._exit(0)


def client(spec: dict[str, Any]) -> dict[str, Any]:
    """Role ``client``: the shared echo client."""
    return _client.run(
        _port(spec),
        spec["active"],
        spec["idle"],
        spec["seconds"],
        spec.get("hold", False),
        spec["timeout"],
    )


ROLES = {"receive": receive, "send": send, "write": write, "serve": serve, "client": client}


def main(argv: list[str]) -> int:
    """Run the role described by the JSON in ``argv[0]``; return the exit status."""
    spec = json.loads(argv[0])
    try:
        result = ROLES[spec["role"]](spec)
    except (
        BenchError,
        VerificationError,
        _sender.SenderError,
        _client.ClientError,
        OSError,
    ) as exc:
        emit("ERROR", {"message": f"{type(exc).__name__}: {exc}"})
        return 1
    emit("RESULT", result)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
