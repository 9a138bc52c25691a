"""Starting a worker process and talking to it, with a deadline on every wait."""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import IO, Any

from iostream.bench._proc import parse_message

#: The interpreter the workers run on (a tool may point it at a wrapper, e.g. valgrind).
PYTHON = sys.executable

#: The directory that holds the ``iostream`` package the harness itself runs.
_SOURCE_ROOT = str(Path(__file__).resolve().parents[2])


class RunFailed(RuntimeError):
    """A worker failed, sent an error, broke the protocol or missed a deadline."""


class Worker:
    """One ``python -m iostream.bench._worker`` process; its stdout lines are read in a thread."""

    def __init__(self, spec: dict[str, Any]) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [_SOURCE_ROOT, env.get("PYTHONPATH")]))
        self.role = str(spec["role"])
        # Closed in finish(); a file, not a pipe, so a chatty worker cannot block.
        self._stderr: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115
        self._proc = subprocess.Popen(
            [PYTHON, "-m", "iostream.bench._worker", json.dumps(spec)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
            env=env,
        )
        self._lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self._proc.stdout is not None
        for line in self._proc.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def expect(self, tag: str, timeout: float) -> dict[str, Any]:
        """Return the payload of the next *tag* line; raise :class:`RunFailed` otherwise."""
        while True:
            try:
                line = self._lines.get(timeout=timeout)
            except queue.Empty:
                raise RunFailed(f"{self.role}: no {tag} within {timeout:.0f} s") from None
            if line is None:
                raise RunFailed(
                    f"{self.role} exited (status {self._proc.wait()}) "
                    f"before {tag}: {self.stderr_tail()}"
                )
            got, payload = parse_message(line)
            if got == tag:
                return payload
            if got == "ERROR":
                raise RunFailed(f"{self.role}: {payload.get('message')}")

    def tell(self, line: str) -> None:
        """Write one line to the worker's stdin (:class:`RunFailed` if it has gone)."""
        assert self._proc.stdin is not None
        try:
            self._proc.stdin.write(line + "\n")
            self._proc.stdin.flush()
        except OSError as exc:  # BrokenPipeError: it exited early
            raise RunFailed(f"{self.role} is gone ({exc}): {self.stderr_tail()}") from exc

    def close_stdin(self) -> None:
        """Close the worker's stdin (servers and holding clients end on it)."""
        try:
            assert self._proc.stdin is not None
            self._proc.stdin.close()
        except OSError:
            pass

    def stderr_tail(self, limit: int = 600) -> str:
        """Return the end of what the worker wrote on stderr."""
        self._stderr.seek(0)
        text = self._stderr.read().decode(errors="replace").strip()
        return text[-limit:] or "(nothing on stderr)"

    def finish(self, timeout: float) -> int:
        """Wait for the worker to exit (killing it after *timeout*); return its status."""
        self.close_stdin()
        try:
            status = self._proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            status = self._proc.wait()
        self._stderr.close()
        return status

    def kill(self) -> None:
        """End the worker now."""
        if self._proc.poll() is None:
            self._proc.kill()
        self.finish(10.0)
