"""The benchmark suite: ``python -m iostream bench`` (see ``bench/README.md``).

iostream against asyncio streams, asyncio Protocol, Tornado, uvloop and trio on
loopback, every peer in its own processes, every result verified. The
modules:

- ``_main``: the command line, the plan of runs, the report;
- ``_runner`` / ``_process``: one run = fresh worker processes;
- ``_worker``: the worker roles (receiver, sender, echo server, client);
- ``_peers``: one adapter per library under test;
- ``_jobs`` / ``_payload``: the phases, the payloads and their verification;
- ``_sender`` / ``_client``: the raw sender and the shared echo client;
- ``_report``: medians, ratios, targets, Markdown and JSON;
- ``_tls``: the run-time certificate.
"""

from __future__ import annotations

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark with command-line arguments *argv*; return the exit status."""
    from iostream.bench._main import main as run

    return run(argv)
