"""Mutation run for issue 4: break the library on purpose, check the suite turns red.

For each mutation below, this script copies ``iostream/``, ``tests/`` and
``pyproject.toml`` of the repository into a fresh temporary directory,
applies the mutation to the *copy* (a plain string replacement that must
match exactly as many times as stated, else the mutation is reported
STALE: the library changed under it), runs pytest there (the copy's
``iostream`` is the one imported: the script checks), and reports which
tests failed. The repository itself is never modified.

A baseline run (no mutation) comes first; a test that fails there is not
counted as catching anything.

    python tests/mutation/run_mutations.py                  # all mutations, issue-4 test files
    python tests/mutation/run_mutations.py --only a1,b1     # some of them
    python tests/mutation/run_mutations.py --poller epoll   # one poller (faster)
    python tests/mutation/run_mutations.py --tests tests    # the whole suite
    python tests/mutation/run_mutations.py --markdown out.md
    python tests/mutation/run_mutations.py -- -x           # extra pytest arguments after --

The runs set ``IOSTREAM_TEST_NO_SHRINK=1``: the hypothesis tests of
``tests/test_chaos.py`` then run a fixed set of examples without shrinking,
so a broken library fails fast and the same way every time.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

#: The test files of issue 4 (the default selection).
ISSUE4_TESTS = [
    "tests/test_windows_send.py",
    "tests/test_chaos.py",
    "tests/test_ewouldblock.py",
]


@dataclass
class Mutation:
    """A named change to one library file: each ``(old, new)`` edit must match
    ``old`` exactly ``count`` times (default once)."""

    id: str
    title: str
    path: str
    edits: list[tuple[str, str]]
    count: int = 1
    #: Why a surviving mutant is (believed to be) equivalent, if it is expected to survive.
    equivalent: str = ""
    notes: list[str] = field(default_factory=list)


S = "iostream/stream.py"
MUTATIONS: list[Mutation] = [
    # -- (a) the 128 KiB cap
    Mutation(
        "a1",
        "remove the Windows cap (default write_chunk_size stays None)",
        S,
        [
            (
                "            write_chunk_size = WINDOWS_WRITE_CHUNK_SIZE\n",
                "            write_chunk_size = None\n",
            )
        ],
    ),
    Mutation(
        "a2",
        "the write() fast path ignores the cap (_send_now sends the whole write)",
        S,
        [
            (
                "chunk = data if cap is None or size <= cap else memoryview(data)[:cap]",
                "chunk = data",
            )
        ],
    ),
    Mutation(
        "a3",
        "_handle_write ignores the cap (peek(None))",
        S,
        [("            view = buffer.peek(cap)\n", "            view = buffer.peek(None)\n")],
    ),
    # -- (b) partial sends
    Mutation(
        "b1",
        "_handle_write drops the rest of a partial send (advance by the peeked length)",
        S,
        [("            buffer.advance(sent)\n", "            buffer.advance(len(view))\n")],
    ),
    Mutation(
        "b2",
        "_send_now drops the rest of a partial send (returns None)",
        S,
        [("        return memoryview(data)[sent:]\n", "        return None\n")],
    ),
    # -- (c) TLS retries after want-write
    Mutation(
        "c1",
        "after want-write, retry with fewer bytes (halve the chunk)",
        S,
        [
            (
                "            except (ssl.SSLWantWriteError, ssl.SSLWantReadError):\n"
                "                return 0\n",
                "            except (ssl.SSLWantWriteError, ssl.SSLWantReadError):\n"
                "                self.write_chunk_size = max(1, len(view) // 2)\n"
                "                return 0\n",
            )
        ],
    ),
    Mutation(
        "c2",
        "after want-write, count one byte as sent (the retry starts one byte later)",
        S,
        [
            (
                "            except (ssl.SSLWantWriteError, ssl.SSLWantReadError):\n"
                "                return 0\n",
                "            except (ssl.SSLWantWriteError, ssl.SSLWantReadError):\n"
                "                return 1\n",
            )
        ],
    ),
    Mutation(
        "c3",
        "WriteBuffer.peek does not freeze the gathering bytearray",
        "iostream/_buffer.py",
        [
            (
                "        if front is self._gathering:\n            self._gathering = None\n",
                "",
            )
        ],
        notes=[
            "not a retry-bytes bug after all: the piece, once sent, is popped while "
            "small writes still go into it, so they are lost"
        ],
    ),
    # -- (d) Windows codes
    Mutation(
        "d1",
        "WSAEWOULDBLOCK / WSAENOBUFS fatal (dropped from WOULD_BLOCK_ERRNOS, "
        "no BlockingIOError branch)",
        "iostream/_platform.py",
        [
            (
                "        WSAEWOULDBLOCK,\n        WSAEINPROGRESS,\n        WSAENOBUFS,\n",
                "",
            ),
            ("    if isinstance(exc, BlockingIOError):\n        return True\n", ""),
        ],
    ),
    Mutation(
        "d2",
        "WSAENOBUFS alone fatal",
        "iostream/_platform.py",
        [("        WSAENOBUFS,\n", "")],
    ),
    Mutation(
        "d3",
        "ENOBUFS (BSD) fatal",
        "iostream/_platform.py",
        [("        errno.ENOBUFS,\n", "")],
    ),
    # -- (e) EINTR
    Mutation(
        "e1",
        "InterruptedError on send closes the stream",
        S,
        [
            (
                "                return self.socket.send(view)\n"
                "            except InterruptedError:\n"
                "                continue  # EINTR never closes a stream: retry\n",
                "                return self.socket.send(view)\n"
                "            except InterruptedError as exc:\n"
                "                self.close(exc)\n"
                "                return -1\n",
            )
        ],
    ),
    Mutation(
        "e2",
        "InterruptedError on recv closes the stream",
        S,
        [
            (
                "                return self.socket.recv_into(view)\n"
                "            except InterruptedError:\n"
                "                continue  # EINTR never closes a stream: retry\n",
                "                return self.socket.recv_into(view)\n"
                "            except InterruptedError:\n"
                "                raise\n",
            )
        ],
    ),
    # -- (f) reads
    Mutation(
        "f1",
        "a short read's bytes are dropped",
        S,
        [
            (
                "            if buffer.size == 0 and buffer._acc is None:\n"
                "                # (ReadBuffer.append's empty form, inlined: once per recv.)\n",
                "            if received < size and self._short_read_drains:\n"
                "                break\n"
                "            if buffer.size == 0 and buffer._acc is None:\n"
                "                # (ReadBuffer.append's empty form, inlined: once per recv.)\n",
            )
        ],
    ),
    Mutation(
        "f2",
        "SSLIOStream ignores data OpenSSL holds decrypted (no pending() loop)",
        S,
        [
            (
                "            if not sock.pending():\n",
                "            if True:\n",
            ),
            (
                "            if isinstance(sock, ssl.SSLSocket) and sock.pending():\n",
                "            if False:\n",
            ),
        ],
    ),
    Mutation(
        "f3",
        "close() loses the bytes of a partial direct read_bytes",
        S,
        [
            (
                "                    self._read_buffer.append(part.tobytes())\n",
                "                    pass\n",
            )
        ],
    ),
    # -- (g) write callbacks
    Mutation(
        "g1",
        "write callbacks run out of order (pop from the wrong end)",
        S,
        [
            (
                "self._ready.append((callbacks.popleft()[1], ()))",
                "self._ready.append((callbacks.pop()[1], ()))",
            )
        ],
    ),
    Mutation(
        "g2",
        "write callbacks run before their bytes were sent",
        S,
        [("        while callbacks and callbacks[0][0] <= sent:\n", "        while callbacks:\n")],
    ),
    # -- (k) the bugs this suite found, put back
    Mutation(
        "k1",
        "regression: WSAENOBUFS on an oversized send retried with the same size (livelock)",
        S,
        [
            (
                "                    self.write_chunk_size = WINDOWS_WRITE_CHUNK_SIZE\n",
                "                    pass\n",
            )
        ],
    ),
    Mutation(
        "k2",
        "regression: a read issued from a callback on a closed stream is dropped silently",
        S,
        [
            (
                "        if self._draining and self._state is not _CLOSED:\n",
                "        if self._draining:\n",
            )
        ],
    ),
    Mutation(
        "k3",
        "regression: InterruptedError from do_handshake is not retried",
        S,
        [
            (
                "                continue  # EINTR: the step did not run; run it again\n",
                "                return\n",
            )
        ],
    ),
    # -- (i) TLS want-* classification
    Mutation(
        "i1",
        "SSLWantReadError on send is fatal",
        S,
        [
            (
                "            except (ssl.SSLWantWriteError, ssl.SSLWantReadError):\n"
                "                return 0\n",
                "            except ssl.SSLWantWriteError:\n                return 0\n",
            )
        ],
    ),
    Mutation(
        "i2",
        "the handshake ignores want-write (waits for READ instead)",
        S,
        [
            (
                "            except ssl.SSLWantWriteError:\n"
                "                self._needs_write = True\n"
                "                return\n",
                "            except ssl.SSLWantWriteError:\n"
                "                self._needs_write = False\n"
                "                return\n",
            )
        ],
    ),
]


# ---------------------------------------------------------------- running


@dataclass
class Result:
    """The outcome of one run."""

    mutation: Mutation | None
    status: str  # "baseline", "KILLED", "SURVIVED", "STALE", "ERROR"
    failed: list[str] = field(default_factory=list)
    passed: int = 0
    seconds: float = 0.0
    detail: str = ""


def make_copy(dest: Path) -> None:
    """Copy what a test run needs into *dest*."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".hypothesis", ".pytest_cache")
    shutil.copytree(ROOT / "iostream", dest / "iostream", ignore=ignore)
    shutil.copytree(ROOT / "tests", dest / "tests", ignore=ignore)
    shutil.copy2(ROOT / "pyproject.toml", dest / "pyproject.toml")


def apply(mutation: Mutation, dest: Path) -> str:
    """Apply *mutation* to the copy in *dest*; return '' or why it cannot be applied."""
    target = dest / mutation.path
    text = target.read_text()
    for old, new in mutation.edits:
        found = text.count(old)
        if found != mutation.count:
            where = f"found {found}x in {mutation.path}, expected {mutation.count}x"
            return f"{old.strip()[:70]!r} {where}"
        text = text.replace(old, new)
    try:
        # A pattern can still match after the code around it moved, and the
        # edit then breaks the syntax (f1 once did): that is stale too.
        compile(text, str(target), "exec")
    except SyntaxError as exc:
        return f"the mutated {mutation.path} does not compile: {exc}"
    target.write_text(text)
    return ""


def failed_tests(junit: Path) -> tuple[list[str], int]:
    """Test ids that failed or errored in a junit XML report, and the pass count."""
    failed: list[str] = []
    passed = 0
    for case in ET.parse(junit).getroot().iter("testcase"):
        module = case.get("classname", "").removeprefix("tests.")
        name = f"{module}.py::{case.get('name', '')}"
        bad = case.find("failure") is not None or case.find("error") is not None
        skipped = case.find("skipped") is not None
        if bad:
            failed.append(name)
        elif not skipped:
            passed += 1
    return failed, passed


def run(mutation: Mutation | None, tests: list[str], args: argparse.Namespace) -> Result:
    """Run *tests* against a copy of the library with *mutation* applied."""
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="mut-") as tmp:
        dest = Path(tmp)
        make_copy(dest)
        if mutation is not None:
            why = apply(mutation, dest)
            if why:
                return Result(mutation, "STALE", detail=why)
        env = dict(os.environ)
        env["IOSTREAM_TEST_NO_SHRINK"] = "1"
        env.pop("PYTHONPATH", None)
        if args.poller:
            env["IOSTREAM_POLLER"] = args.poller
        probe = subprocess.run(
            [sys.executable, "-c", "import iostream; print(iostream.__file__)"],
            cwd=dest,
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        if not probe.stdout.strip().startswith(str(dest)):
            return Result(mutation, "ERROR", detail=f"imports the wrong iostream: {probe.stdout}")
        junit = dest / "junit.xml"
        cmd = [
            sys.executable,
            "-m",
            "pytest",
            *tests,
            "-q",
            "-p",
            "no:cacheprovider",
            f"--junitxml={junit}",
            f"--timeout={args.timeout}",
            *args.pytest_args,
        ]
        proc = subprocess.run(cmd, cwd=dest, env=env, capture_output=True, text=True, check=False)
        seconds = time.monotonic() - started
        if not junit.exists():
            tail = (proc.stdout + proc.stderr)[-2000:]
            return Result(mutation, "ERROR", seconds=seconds, detail=tail)
        failed, passed = failed_tests(junit)
    status = "baseline" if mutation is None else ("KILLED" if failed else "SURVIVED")
    return Result(mutation, status, failed, passed, seconds)


def group(names: list[str]) -> list[str]:
    """``m.py::test_x[epoll]``, ``m.py::test_x[poll]`` -> ``m.py::test_x [epoll, poll]``."""
    by_test: dict[str, list[str]] = {}
    for name in names:
        base, _, param = name.partition("[")
        by_test.setdefault(base, [])
        if param:
            by_test[base].append(param.rstrip("]"))
    return [f"{key} [{', '.join(params)}]" if params else key for key, params in by_test.items()]


def markdown(results: list[Result], tests: list[str], args: argparse.Namespace) -> str:
    """The results as a Markdown table."""
    lines = [
        f"Test selection: {' '.join(tests)}; poller: {args.poller or 'all available'}; "
        f"Python {sys.version.split()[0]} on {sys.platform}.",
        "",
        "| id | mutation | result | caught by |",
        "|----|----------|--------|-----------|",
    ]
    for r in results:
        if r.mutation is None:
            continue
        m = r.mutation
        if r.status == "KILLED":
            caught = "<br>".join(f"`{name}`" for name in group(r.failed))
        elif r.status == "SURVIVED":
            caught = f"nothing — {m.equivalent}" if m.equivalent else "**nothing**"
        else:
            caught = r.detail.replace("|", "\\|").replace("\n", " ")[:200]
        lines.append(f"| {m.id} | {m.title} | {r.status} ({r.seconds:.0f} s) | {caught} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Command line entry point; exit status 1 if a mutation survived unexpectedly."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", help="comma-separated mutation ids")
    parser.add_argument("--poller", help="run on this poller only (IOSTREAM_POLLER)")
    parser.add_argument("--tests", nargs="+", default=ISSUE4_TESTS, help="test paths")
    parser.add_argument("--timeout", type=int, default=90, help="per-test timeout, seconds")
    parser.add_argument("--markdown", type=Path, help="also write the table here")
    parser.add_argument("--no-baseline", action="store_true", help="skip the unmutated run")
    parser.add_argument("--list", action="store_true", help="list the mutations and exit")
    parser.add_argument(
        "--check", action="store_true", help="only check that every mutation still applies"
    )
    argv = sys.argv[1:] if argv is None else argv
    extra: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, extra = argv[:cut], argv[cut + 1 :]
    args = parser.parse_args(argv)
    args.pytest_args = extra
    if args.list:
        for m in MUTATIONS:
            print(f"{m.id:4} {m.path:24} {m.title}")
        return 0
    if args.check:
        stale = 0
        with tempfile.TemporaryDirectory(prefix="mut-") as tmp:
            for m in MUTATIONS:
                dest = Path(tmp) / m.id
                dest.mkdir()
                shutil.copytree(ROOT / "iostream", dest / "iostream")
                why = apply(m, dest)
                stale += bool(why)
                print(f"{m.id:4} {'STALE: ' + why if why else 'applies'}")
        return 1 if stale else 0
    chosen = MUTATIONS
    if args.only:
        wanted = set(args.only.split(","))
        chosen = [m for m in MUTATIONS if m.id in wanted]
        unknown = wanted - {m.id for m in chosen}
        if unknown:
            parser.error(f"unknown mutation ids: {sorted(unknown)}")
    results: list[Result] = []
    baseline_failures: set[str] = set()
    if not args.no_baseline:
        base = run(None, args.tests, args)
        print(f"baseline: {base.passed} passed, {len(base.failed)} failed ({base.seconds:.0f} s)")
        if base.status == "ERROR":
            print(base.detail)
            return 2
        for name in base.failed:
            print(f"  failing without any mutation (ignored below): {name}")
        baseline_failures = set(base.failed)
    for m in chosen:
        print(f"{m.id}: {m.title} ...", flush=True)
        r = run(m, args.tests, args)
        r.failed = [name for name in r.failed if name not in baseline_failures]
        if r.status == "KILLED" and not r.failed:
            r.status = "SURVIVED"
        results.append(r)
        print(f"  {r.status} in {r.seconds:.0f} s: {len(r.failed)} tests failed")
        for name in group(r.failed):
            print(f"    {name}")
        if r.detail:
            print(f"    {r.detail[-500:]}")
    table = markdown(results, args.tests, args)
    print()
    print(table)
    if args.markdown:
        args.markdown.write_text(table)
    unexpected = [
        r for r in results if r.status == "SURVIVED" and r.mutation and not r.mutation.equivalent
    ]
    return 1 if unexpected or any(r.status in ("STALE", "ERROR") for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
