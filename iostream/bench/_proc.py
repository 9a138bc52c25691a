"""Process plumbing shared by the worker roles: messages to the harness, limits, RSS.

A worker talks to the harness in lines on stdout: ``TAG {json}``. Tags are
``READY`` (listening, with the port), ``HELD`` (the client holds its
connections), ``STAT`` (an answer to ``stat`` on stdin) and ``RESULT`` (the
last line of a successful run).
"""

from __future__ import annotations

import json
import os
import sys
import threading
from typing import Any

_emit_lock = threading.Lock()


def emit(tag: str, payload: dict[str, Any] | None = None) -> None:
    """Write one ``TAG {json}`` line to stdout and flush it."""
    line = f"{tag} {json.dumps(payload or {}, sort_keys=True)}\n"
    with _emit_lock:
        sys.stdout.write(line)
        sys.stdout.flush()


def parse_message(line: str) -> tuple[str, dict[str, Any]]:
    """Split a worker's stdout line into its tag and payload."""
    tag, _, rest = line.strip().partition(" ")
    payload = json.loads(rest) if rest else {}
    if not isinstance(payload, dict):
        raise ValueError(f"line: expected 'TAG {{json object}}', got {line!r}")
    return tag, payload


def raise_nofile() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit; return the new soft limit."""
    try:
        import resource
    except ImportError:  # Windows: no rlimits; the C runtime's limit applies.
        return 512
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = 1 << 20
    if soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    return int(soft)


def rss_kib() -> int:
    """Return this process's resident set size in KiB (``/proc``), or the peak where not."""
    try:
        with open(f"/proc/{os.getpid()}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak // 1024 if sys.platform == "darwin" else peak)
