"""Smoke tests of the benchmark harness (``iostream.bench``).

The verification must reject wrong data (unit tests of the sinks, and a
whole run against the deliberately broken ``corrupt`` peer), and a tiny
workload of every kind must complete, in real worker processes, and pass
its own checks. Sizes are tiny: the point is the plumbing, not the numbers.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import select
import sys
from pathlib import Path
from typing import Any

import pytest

from iostream.bench import _jobs, _payload, _report, _runner, _tls
from iostream.bench._config import BLOCK, LINE, OWN_WORKLOADS, QUICK, WORKLOADS, metrics_for
from iostream.bench._main import main, plan
from iostream.bench._peers import PEERS, make_peer

TINY = dataclasses.replace(
    QUICK,
    bulk_bytes=2 * 1024 * 1024,
    lines=10_000,
    big_bytes=1024 * 1024,
    big_until=256 * 1024,
    echo_conns=4,
    echo_seconds=0.2,
    idle_counts=(0, 20),
    idle_seconds=0.2,
    tls_bytes=1024 * 1024,
    memory_conns=50,
    repeat=1,
    timeout=30.0,
)

# The library under test when its stream layer is importable, else the baseline.
SUBJECT = "iostream" if PEERS["iostream"].unavailable() is None else "asyncio-streams"


@pytest.fixture(scope="module")
def context(tmp_path_factory: pytest.TempPathFactory) -> _runner.Context:
    """Sizes, a scratch directory and a certificate for the runs."""
    workdir = tmp_path_factory.mktemp("bench")
    cert = _tls.make_cert(workdir)
    assert not isinstance(cert, str), cert
    return _runner.Context(TINY, workdir, cert)


def _job(workload: str, peer: str, idle: int = 0) -> _runner.Job:
    label = make_peer(peer).label
    return _runner.Job(workload, _runner.Variant(peer, None, label), rep=1, idle=idle)


def _needs(peer: str) -> None:
    """Skip when an optional peer's library is not installed (the bench extra)."""
    reason = PEERS[peer].unavailable()
    if reason is not None:
        pytest.skip(reason)


# ---------------------------------------------------------------- sinks


def _blocks(count: int) -> list[bytes]:
    return [_payload.block(seq) for seq in range(count)]


def test_block_sink_accepts_the_payload() -> None:
    sink = _payload.BlockSink(3)
    for block in _blocks(3):
        sink.feed(block)
    sink.finish()


@pytest.mark.parametrize("fault", ["flip", "drop", "double", "swap", "short"])
def test_block_sink_rejects_damage(fault: str) -> None:
    blocks = _blocks(4)
    if fault == "flip":
        damaged = bytearray(blocks[1])
        damaged[BLOCK // 2] ^= 1
        blocks[1] = bytes(damaged)
    elif fault == "drop":
        del blocks[2]
    elif fault == "double":
        blocks.insert(2, blocks[1])
        del blocks[-1]
    elif fault == "swap":
        blocks[1], blocks[2] = blocks[2], blocks[1]
    else:
        blocks[3] = blocks[3][:-1]
    sink = _payload.BlockSink(4)
    for block in blocks:
        sink.feed(block)
    with pytest.raises(_payload.VerificationError):
        sink.finish()


@pytest.mark.parametrize("keeps", [True, False])
def test_line_sink_accepts_the_payload(keeps: bool) -> None:
    expected = _payload.lines(0, 5000)
    sink = _payload.LineSink(expected, keeps)
    for start in range(0, len(expected), LINE):
        line = expected[start : start + LINE]
        sink.feed(line if keeps else line[:-1])
        if start % (1000 * LINE) == 0:
            sink.end_round()
    sink.end_round()
    sink.finish()


@pytest.mark.parametrize("fault", ["merge", "resplit", "flip", "missing"])
def test_line_sink_rejects_damage(fault: str) -> None:
    expected = _payload.lines(0, 100)
    items = [expected[i : i + LINE] for i in range(0, len(expected), LINE)]
    if fault == "merge":  # two lines delivered as one read
        items[10:12] = [items[10] + items[11]]
    elif fault == "resplit":  # the bytes are all there, the boundaries are wrong
        items[10:12] = [items[10][:-1], items[10][-1:] + items[11]]
    elif fault == "flip":
        items[50] = items[50].replace(b":", b";")
    else:
        del items[-1]
    sink = _payload.LineSink(expected)
    for item in items:
        sink.feed(item)
    sink.end_round()
    with pytest.raises(_payload.VerificationError):
        sink.finish()


def test_message_sink_rejects_a_different_message() -> None:
    sink = _payload.MessageSink(_payload.until_message(1000))
    sink.feed(_payload.until_message(999) + b"x")
    with pytest.raises(_payload.VerificationError):
        sink.finish()


def test_clock_subtracts_verification_and_needs_an_end() -> None:
    spec = _jobs.PhaseSpec("bulk", b"1", False, BLOCK, 1)
    sink = _payload.BlockSink(1)
    clock = _jobs.Clock(spec, sink)
    clock.begin()
    with pytest.raises(_payload.VerificationError):
        clock.seconds()
    sink.feed(_payload.block(0))
    clock.stop()
    assert 0 <= clock.seconds() < clock.stopped - clock.started


# ---------------------------------------------------------------- whole runs


@pytest.mark.parametrize(
    ("workload", "peer"),
    [
        ("bulk", "corrupt"),
        ("lines", "corrupt"),
        ("echo", "corrupt"),
        # Both ends the peer: a receiver that spoils what it reads...
        ("own-bulk", "corrupt"),
        ("own-lines", "corrupt"),
        ("own-bigmsg", "corrupt"),
        # ... and an honest receiver whose own client spoils what it writes.
        ("own-bulk", "corrupt-writer"),
        ("own-lines", "corrupt-writer"),
        ("own-bigmsg", "corrupt-writer"),
    ],
)
def test_a_corrupted_run_posts_no_number(
    workload: str, peer: str, context: _runner.Context
) -> None:
    outcome = _runner.run_job(_job(workload, peer), context)
    assert outcome.error is not None
    # The verdict is the checks', not a crash: the receiver's or the echo client's.
    assert "VerificationError" in outcome.error or "is not the line sent" in outcome.error
    assert not outcome.values
    report = _report.Report(metrics_for(workload, TINY), [peer], None)
    report.add(outcome)
    assert report.failed
    assert "FAILED" in _report.markdown_table(report)


@pytest.mark.parametrize(
    ("workload", "idle"),
    [
        ("bulk", 0),
        ("lines", 0),
        ("bigmsg", 0),
        ("echo", 0),
        ("idle", 20),
        ("tls-bulk", 0),
        ("memory", 0),
    ],
)
def test_each_workload_completes_verified(
    workload: str, idle: int, context: _runner.Context
) -> None:
    outcome = _runner.run_job(_job(workload, SUBJECT, idle), context)
    assert outcome.error is None, outcome.error
    assert set(outcome.values) == set(outcome.job.metric_keys)
    if workload != "memory":  # memory per connection may round to zero or below
        assert all(value > 0 for value in outcome.values.values())


def test_protocol_peer_lines_without_delimiter(context: _runner.Context) -> None:
    outcome = _runner.run_job(_job("bigmsg", "asyncio-protocol"), context)
    assert outcome.error is None, outcome.error


_OWN_PEERS = [
    SUBJECT,
    "iostream-await",
    "asyncio-streams",
    "asyncio-protocol",
    "tornado",
    "uvloop-streams",
    "trio",
]


@pytest.mark.parametrize("peer", _OWN_PEERS)
@pytest.mark.parametrize("workload", sorted(OWN_WORKLOADS))
def test_both_ends_workloads_complete_verified(
    workload: str, peer: str, context: _runner.Context
) -> None:
    """The peer's own client writes, its own server reads; every byte checked."""
    _needs(peer)
    outcome = _runner.run_job(_job(workload, peer), context)
    assert outcome.error is None, outcome.error
    assert set(outcome.values) == set(outcome.job.metric_keys)
    assert all(key.startswith("own-") for key in outcome.values)
    assert all(value > 0 for value in outcome.values.values())
    # The client's own CPU per phase is reported; the shared-sender flag is not.
    assert set(outcome.extra["peer_sender_cpu_s"]) == set(outcome.values)
    assert "sender_cpu" not in outcome.extra


@pytest.mark.parametrize(
    ("workload", "idle"), [("bulk", 0), ("lines", 0), ("bigmsg", 0), ("echo", 0), ("idle", 20)]
)
def test_trio_peer_shared_side_workloads(
    workload: str, idle: int, context: _runner.Context
) -> None:
    _needs("trio")
    outcome = _runner.run_job(_job(workload, "trio", idle), context)
    assert outcome.error is None, outcome.error
    assert all(value > 0 for value in outcome.values.values())


def test_trio_peer_tls_and_memory(context: _runner.Context) -> None:
    _needs("trio")
    for workload in ("tls-bulk", "memory"):
        outcome = _runner.run_job(_job(workload, "trio"), context)
        assert outcome.error is None, (workload, outcome.error)


@pytest.mark.parametrize("workload", ["bulk", "lines", "bigmsg", "echo", "tls-bulk", "memory"])
def test_iostream_await_peer_shared_side_workloads(workload: str, context: _runner.Context) -> None:
    """The awaitable API: ``await read_until`` / ``await read_bytes`` / a coroutine server."""
    _needs("iostream-await")
    outcome = _runner.run_job(_job(workload, "iostream-await"), context)
    assert outcome.error is None, outcome.error
    assert outcome.job.variant.label.startswith("iostream-await-")


def test_await_peer_is_never_the_primary_column() -> None:
    jobs, _ = plan(["iostream-await", "iostream", "asyncio-streams"], ["echo"], None, TINY)
    labels = {job.variant.label for job in jobs}
    assert {label for label in labels if label.startswith("iostream-await-")}
    report = _report_with(
        {"iostream-await-epoll": {"own-lines": 1.3}, "asyncio-streams": {"own-lines": 1.0}},
        ["own-lines"],
    )
    rows = {row["target"]: row for row in _report.target_rows(report)}
    row = rows["lines, both ends, >= 1.2x asyncio streams (await read_until)"]
    assert row["column"] == "iostream-await-epoll"
    assert row["met"] is True
    assert rows["lines, both ends, >= 1.5x asyncio streams (callback API)"]["column"] == (
        "iostream-epoll"
    )


@pytest.mark.parametrize("workload", ["echo", "lines", "own-lines"])
def test_asyncio_on_iostream_loop_peer(workload: str, context: _runner.Context) -> None:
    _needs("asyncio-on-iostream")
    outcome = _runner.run_job(_job(workload, "asyncio-on-iostream"), context)
    assert outcome.error is None, outcome.error
    assert outcome.job.variant.label.startswith("asyncio-on-iostream-")


def test_trio_reader_reads_exactly_and_until() -> None:
    """The trio peer's buffered reader: sizes across chunk edges, delimiters split by them."""
    _needs("trio")
    import trio

    from iostream.bench._peers.trio_peer import _BufferedReader, _Closed

    class Chunks:
        def __init__(self, chunks: list[bytes]) -> None:
            self.chunks = chunks

        async def receive_some(self) -> bytes:
            return self.chunks.pop(0) if self.chunks else b""

    async def main() -> list[bytes]:
        reader = _BufferedReader(Chunks([b"abc", b"de\nfg", b"h", b"\r", b"\nxyz"]))
        got = [await reader.read_exactly(2), await reader.read_until(b"\n", 100)]
        got.append(await reader.read_until(b"\r\n", 100))
        got.append(await reader.read_exactly(3))
        with pytest.raises(_Closed):
            await reader.read_exactly(1)
        return got

    assert trio.run(main) == [b"ab", b"cde\n", b"fgh\r\n", b"xyz"]


# ---------------------------------------------------------------- planning and the command line


def test_plan_runs_the_asyncio_on_iostream_peer_on_echo_and_lines_only() -> None:
    jobs, notes = plan(["asyncio-streams", "asyncio-on-iostream"], list(WORKLOADS), None, TINY)
    mine = {job.workload for job in jobs if job.variant.peer == "asyncio-on-iostream"}
    assert mine == {"echo", "lines", "own-lines"}
    assert {job.workload for job in jobs if job.variant.peer == "asyncio-streams"} == set(WORKLOADS)
    assert any(note.startswith("asyncio-on-iostream runs only") for note in notes)


def test_plan_rotates_the_peers_from_one_repetition_to_the_next() -> None:
    """No peer always runs last (the run order cost the last one about 10% on echo)."""
    sizes = dataclasses.replace(TINY, repeat=3)
    peers = ["iostream", "asyncio-streams", "asyncio-on-iostream"]
    jobs, _ = plan(peers, ["echo"], "epoll", sizes)
    orders = [[job.variant.peer for job in jobs if job.rep == rep] for rep in (1, 2, 3)]
    assert orders[0] == peers
    assert [order[-1] for order in orders] == ["asyncio-on-iostream", "iostream", "asyncio-streams"]
    assert all(sorted(order) == sorted(peers) for order in orders)


def test_own_metrics_are_named_apart_from_the_shared_ones() -> None:
    shared = metrics_for("bigmsg", TINY)
    own = metrics_for("own-bigmsg", TINY)
    assert [m.key for m in own] == ["own-bigmsg-bytes", "own-bigmsg-until"]
    assert all("64 KiB write()s" in m.label for m in own)
    assert [m.unit for m in own] == [m.unit for m in shared]
    assert _jobs.parts("own-bigmsg") == ["own-bigmsg-bytes", "own-bigmsg-until"]
    assert _jobs.phases_for("own-lines", TINY) == _jobs.phases_for("lines", TINY)


def test_own_chunks_are_the_payload_in_64_kib_writes(tmp_path: Path) -> None:
    for spec in _jobs.phases_for("own-lines", TINY) + _jobs.phases_for("own-bigmsg-until", TINY):
        chunks = _jobs.own_chunks(spec, str(tmp_path))
        assert all(len(chunk) == BLOCK for chunk in chunks[:-1])
        assert 0 < len(chunks[-1]) <= BLOCK
        assert sum(map(len, chunks)) == spec.total
    (bulk,) = _jobs.phases_for("own-bulk", TINY)[1:]
    chunks = _jobs.own_chunks(bulk, None)
    assert [_payload.block_ok(bytes(chunk), seq) for seq, chunk in enumerate(chunks)] == [True] * (
        TINY.bulk_bytes // BLOCK
    )


def test_plan_interleaves_repetitions_and_skips_select_above_its_limit() -> None:
    sizes = dataclasses.replace(TINY, repeat=2, idle_counts=(0, 10_000))
    jobs, notes = plan(["iostream", "asyncio-streams"], ["bulk", "idle"], "select", sizes)
    assert [job.rep for job in jobs] == sorted(job.rep for job in jobs)
    assert {job.variant.label for job in jobs} == {"iostream-select", "asyncio-streams"}
    assert not any(job.variant.poller == "select" and job.idle == 10_000 for job in jobs)
    assert any("FD_SETSIZE" in note for note in notes)


def test_quick_plan_runs_idle_on_the_best_poller_only() -> None:
    from iostream import pollers

    full, _ = plan(["iostream"], ["idle"], None, TINY)
    quick, _ = plan(["iostream"], ["idle"], None, TINY, quick=True)
    assert {job.variant.poller for job in full} == set(pollers.available())
    assert {job.variant.poller for job in quick} == {None}
    assert len(quick) == len(TINY.idle_counts)


def test_quick_plan_runs_the_baseline_first_in_the_middle_and_last() -> None:
    """One repetition: the baseline's median of three is every ratio's denominator."""
    peers = ["iostream", "asyncio-streams", "asyncio-protocol", "asyncio-on-iostream"]
    quick, _ = plan(peers, ["echo"], "epoll", TINY, quick=True)
    order = [job.variant.peer for job in quick]
    assert order == [
        "asyncio-streams",
        "iostream",
        "asyncio-streams",
        "asyncio-protocol",
        "asyncio-on-iostream",
        "asyncio-streams",
    ]
    assert [job.rep for job in quick if job.variant.peer == "asyncio-streams"] == [1, 2, 3]
    assert {job.rep for job in quick if job.variant.peer != "asyncio-streams"} == {1}
    full, _ = plan(peers, ["echo"], "epoll", dataclasses.replace(TINY, repeat=1))
    assert [job.variant.peer for job in full].count("asyncio-streams") == 1


def test_noise_policy_options_are_checked(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--retries", "-1"]) == 2
    assert "--retries" in capsys.readouterr().err
    assert main(["--quiet-wait", "nan"]) == 2
    assert "--quiet-wait" in capsys.readouterr().err


def test_unknown_peer_or_workload_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    """Each is the command line's one ``iostream: error:`` line, not ``bench: ...``."""
    for args, words in [
        (["--peers", "no-such-peer"], "unknown peer"),
        (["--workloads", "no-such-workload"], "unknown workload"),
        (["--repeat", "0"], "--repeat"),
        (["--poller", "no-such-poller"], "unknown poller"),
        (["--repeat", "x"], "--repeat"),
    ]:
        assert main(args) == 2, args
        captured = capsys.readouterr()
        lines = captured.err.splitlines()
        assert len(lines) == 1, captured.err
        assert lines[0].startswith("iostream: error: ") and words in lines[0], lines
        assert captured.out == ""


# ------------------------------------------------------------- report output


@pytest.fixture
def no_runs(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Replace the runs themselves with nothing; record how many jobs were run."""
    from iostream.bench import _main

    ran: list[int] = []
    monkeypatch.setattr(_main, "_run_all", lambda jobs, ctx, report: ran.append(len(jobs)))
    return ran


QUICK_IDLE = ["--quick", "--workloads", "idle", "--peers", SUBJECT]


@pytest.mark.parametrize("option", ["--json", "--markdown"])
@pytest.mark.parametrize("where", ["missing-directory", "directory"])
def test_an_unwritable_destination_fails_before_anything_runs(
    option: str,
    where: str,
    tmp_path: Path,
    no_runs: list[int],
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``--json /nonexistent/x.json``: one line and exit 2 at once, not a traceback
    after the whole run (which lost its results)."""
    path = tmp_path / "no-such-dir" / "x.out" if where == "missing-directory" else tmp_path
    assert main([*QUICK_IDLE, option, str(path)]) == 2
    captured = capsys.readouterr()
    assert no_runs == []
    assert captured.out == ""
    assert captured.err.splitlines() == [
        f"iostream: error: cannot write to {path} ({option}): "
        + ("No such file or directory" if where == "missing-directory" else "Is a directory")
    ]


def test_checking_a_destination_leaves_no_file_behind(
    tmp_path: Path, no_runs: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The early check creates no file of its own: a run that ends before writing
    (a bad option found later, Ctrl-C) leaves the directory as it was."""
    out = tmp_path / "results.json"
    assert main([*QUICK_IDLE, "--json", str(out), "--repeat", "0"]) == 2
    assert not out.exists()
    out.write_text("previous results\n", encoding="utf-8")
    assert main([*QUICK_IDLE, "--json", str(out), "--repeat", "0"]) == 2
    assert out.read_text(encoding="utf-8") == "previous results\n"


def test_markdown_to_a_full_disk_is_one_line_exit_1(
    no_runs: list[int], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--markdown /dev/full``: the run happens, the write fails: one line, exit 1;
    the other destinations (--json, stdout) are still written."""
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full on this OS")
    out = tmp_path / "results.json"
    assert main([*QUICK_IDLE, "--markdown", "/dev/full", "--json", str(out)]) == 1
    captured = capsys.readouterr()
    assert len(no_runs) == 1  # the run happened before the write failed
    assert captured.err.splitlines()[-1] == (
        "iostream: error: cannot write to /dev/full (--markdown): No space left on device"
    )
    assert "Traceback" not in captured.err
    assert "Mode: quick" in captured.out
    assert json.loads(out.read_text(encoding="utf-8"))["config"]["workloads"] == ["idle"]


def test_stdout_on_a_full_disk_is_one_line_and_keeps_the_json(tmp_path: Path) -> None:
    """``bench ... > /dev/full`` (a real, short run): one ``iostream: error:`` line after
    the progress, exit 1, no traceback; the --json file is written all the same."""
    import subprocess

    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full on this OS")
    out = tmp_path / "results.json"
    package_parent = Path(__file__).resolve().parent.parent
    env = dict(os.environ, PYTHONPATH=str(package_parent))
    env.pop("IOSTREAM_POLLER", None)
    with open("/dev/full", "wb") as full:
        proc = subprocess.run(
            [sys.executable, "-m", "iostream", "bench", *QUICK_IDLE, "--json", str(out)],
            stdout=full,
            stderr=subprocess.PIPE,
            env=env,
            timeout=120,
            check=False,
        )
    stderr = proc.stderr.decode("utf-8", "replace")
    assert proc.returncode == 1, stderr
    assert "Traceback" not in stderr and "Exception ignored" not in stderr, stderr
    errors = [line for line in stderr.splitlines() if "error" in line.lower()]
    assert errors == [
        "iostream: error: cannot write to standard output: No space left on device"
    ], stderr
    assert json.loads(out.read_text(encoding="utf-8"))["config"]["peers"] == [SUBJECT]


@pytest.mark.parametrize(
    ("peer", "module", "requirement"),
    [
        ("tornado", "tornado", "tornado>=6"),
        ("trio", "trio", "trio>=0.22"),
        ("uvloop-streams", "uvloop", "uvloop>=0.17"),
    ],
)
def test_a_missing_peer_names_the_bench_extras_requirement(
    peer: str, module: str, requirement: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The note for a missing peer names a command that works: the ``bench`` extra's
    requirement from the index (``iostream-loop`` itself is not published yet)."""
    tomllib = pytest.importorskip("tomllib")
    with open(Path(__file__).resolve().parent.parent / "pyproject.toml", "rb") as f:
        bench_extra = tomllib.load(f)["project"]["optional-dependencies"]["bench"]
    assert any(entry.split(";")[0].strip() == requirement for entry in bench_extra)
    monkeypatch.setitem(sys.modules, module, None)  # `import module` raises ImportError
    assert PEERS[peer].unavailable() == (
        f"{module} is not installed (python -m pip install '{requirement}')"
    )


def _report_with(
    values: dict[str, dict[str, float]], workloads: list[str], mode: str = "full"
) -> _report.Report:
    """A report with one sample per (label, metric) of *values*, from *workloads*."""
    report = _report.Report(
        [m for workload in workloads for m in metrics_for(workload, TINY)],
        list(values),
        "iostream-epoll",
        config={"mode": mode},
    )
    for label, by_key in values.items():
        for workload in workloads:
            job = _runner.Job(workload, _runner.Variant("x", None, label), 1)
            report.add(_runner.Outcome(job, values={k: by_key[k] for k in job.metric_keys}))
    return report


def test_report_ratios_and_targets(tmp_path: Path) -> None:
    report = _report_with(
        {
            "iostream-epoll": {"own-bulk": 300.0, "own-bigmsg-bytes": 0.1, "own-bigmsg-until": 0.1},
            "asyncio-streams": {
                "own-bulk": 100.0,
                "own-bigmsg-bytes": 0.4,
                "own-bigmsg-until": 0.4,
            },
            "trio": {"own-bulk": 400.0, "own-bigmsg-bytes": 0.1, "own-bigmsg-until": 0.1},
        },
        ["own-bulk", "own-bigmsg"],
    )
    metrics = report.metrics
    assert report.ratio(metrics[0], "iostream-epoll") == pytest.approx(3.0)
    assert report.ratio(metrics[1], "iostream-epoll") == pytest.approx(4.0)  # seconds: inverted
    rows = {row["target"]: row for row in _report.target_rows(report)}
    assert rows["bulk, both ends, >= 3x asyncio streams"]["met"] is True
    ahead = rows["bulk, both ends, ahead of trio"]
    assert ahead["measured"] == pytest.approx(0.75)
    assert ahead["met"] is False
    assert rows["echo >= 3x asyncio streams"]["met"] is None
    assert "3.00" in _report.markdown_table(report)


def test_report_has_a_both_ends_table_and_a_shared_table() -> None:
    report = _report_with(
        {
            "iostream-epoll": {"bulk": 300.0, "own-bulk": 200.0},
            "asyncio-streams": {"bulk": 100.0, "own-bulk": 100.0},
        },
        ["bulk", "own-bulk"],
    )
    text = _report.markdown(dataclasses.replace(report, machine=_report.machine_info(), notes=[]))
    both, shared = text.index(_report.BOTH_ENDS), text.index(_report.SHARED)
    assert both < text.index("64 KiB write()s -> read_bytes") < shared
    assert text.index("bulk 2 MiB, read_bytes") > shared
    assert "2.00" in text[both:shared] and "3.00" in text[shared:]


def test_report_warns_when_other_processes_kept_the_machine_busy() -> None:
    values = {"iostream-epoll": {"echo": 2.0}, "asyncio-streams": {"echo": 1.0}}
    quiet, busy = _report_with(values, ["echo"]), _report_with(values, ["echo"])
    quiet.foreign, busy.foreign = [0.0, 0.1, 0.9], [0.1, 1.5, 1.6]
    assert not any("not comparable" in note for note in quiet.all_notes())
    assert any("not comparable" in note for note in busy.all_notes())


def test_quick_report_marks_indicative_rows() -> None:
    values = {"iostream-epoll": {"tls-bulk": 150.0}, "asyncio-streams": {"tls-bulk": 100.0}}
    quick = _report_with(values, ["tls-bulk"], mode="quick")
    full = _report_with(values, ["tls-bulk"], mode="full")
    assert "(indicative only)" in _report.markdown_table(quick)
    assert "(indicative only)" not in _report.markdown_table(full)
    assert _report.to_json(quick)["results"]["tls-bulk"]["indicative_only"] is True
    row = next(r for r in _report.target_rows(quick) if r["metric"] == "tls-bulk")
    assert row["indicative"] is True


def test_quick_report_marks_the_bimodal_and_single_sample_own_rows() -> None:
    """Both-ends bulk on loopback is bimodal (one peer measured 2,339 and
    5,187 MiB/s minutes apart) and the 16 MiB read_until is one ~16 ms
    sample in quick mode: a quick run says those ratios are indicative."""
    values = {
        label: {"own-bulk": v, "own-bigmsg-bytes": 0.1, "own-bigmsg-until": 0.1}
        for label, v in (("iostream-epoll", 300.0), ("asyncio-streams", 100.0))
    }
    quick = _report.to_json(_report_with(values, ["own-bulk", "own-bigmsg"], mode="quick"))
    assert quick["results"]["own-bulk"]["indicative_only"] is True
    assert quick["results"]["own-bigmsg-until"]["indicative_only"] is True
    assert quick["results"]["own-bigmsg-bytes"]["indicative_only"] is False
    full = _report.to_json(_report_with(values, ["own-bulk", "own-bigmsg"], mode="full"))
    assert full["results"]["own-bulk"]["indicative_only"] is False


def test_quick_report_marks_the_shared_sender_bulk_row() -> None:
    """One 128 MiB sample per peer: in four quick runs of four, some peer's
    shared-sender bulk ratio was more than 25% from the full run's."""
    values = {
        label: {"bulk": v, "lines": v}
        for label, v in (("iostream-epoll", 300.0), ("asyncio-streams", 100.0))
    }
    quick = _report.to_json(_report_with(values, ["bulk", "lines"], mode="quick"))
    assert quick["results"]["bulk"]["indicative_only"] is True
    assert quick["results"]["lines"]["indicative_only"] is False
    full = _report.to_json(_report_with(values, ["bulk", "lines"], mode="full"))
    assert full["results"]["bulk"]["indicative_only"] is False


def test_load_meter_reports_other_processes_cores() -> None:
    from iostream.bench import _load

    meter = _load.LoadMeter()
    meter.start()
    foreign = meter.foreign()
    assert foreign is None or foreign >= 0.0
    assert _load.wait_quiet(0.0) == pytest.approx(0.0, abs=0.1)


# ---------------------------------------------------------------- the scripts under bench/


def _script(name: str) -> Any:
    """Import ``bench/<name>.py`` (a script, not a package module)."""
    path = Path(__file__).resolve().parents[1] / "bench" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"bench_{name}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_compare_flags_ratios_outside_the_tolerance(tmp_path: Path) -> None:
    compare = _script("compare")

    def run(mode: str, ratio: float) -> dict[str, Any]:
        report = _report_with(
            {"iostream-epoll": {"echo": ratio}, "asyncio-streams": {"echo": 1.0}}, ["echo"], mode
        )
        return _report.to_json(report)

    lines = compare.compare(run("quick", 1.2), run("full", 1.0), 0.25)
    assert not any("DISAGREES" in line for line in lines)
    lines = compare.compare(run("quick", 1.3), run("full", 1.0), 0.25)
    assert any("DISAGREES" in line and "iostream-epoll" in line for line in lines)
    first, second = tmp_path / "a.json", tmp_path / "b.json"
    first.write_text(json.dumps(run("quick", 2.0)))
    second.write_text(json.dumps(run("full", 1.0)))
    assert compare.main([str(first), str(second)]) == 1
    assert compare.main([str(first), str(first)]) == 0


@pytest.mark.skipif(
    not hasattr(os, "fork") or not hasattr(select, "epoll"), reason="needs fork and epoll"
)
def test_sockopts_measures_every_option_set(capsys: pytest.CaptureFixture[str]) -> None:
    sockopts = _script("sockopts")
    assert sockopts.main(["--mib", "2", "--runs", "1", "--no-pin"]) == 0
    out = capsys.readouterr().out
    medians = out.split("medians:")[1]
    for option in ("default", "nodelay", "lowat", "both"):
        assert f"\n{option} " in medians
