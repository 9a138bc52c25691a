"""Smoke tests of the benchmark harness (``iostream.bench``).

The verification must reject wrong data (unit tests of the sinks, and a
whole run against the deliberately broken ``corrupt`` peer), and a tiny
workload of every kind must complete, in real worker processes, and pass
its own checks. Sizes are tiny: the point is the plumbing, not the numbers.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from iostream.bench import _jobs, _payload, _report, _runner, _tls
from iostream.bench._config import BLOCK, LINE, QUICK, metrics_for
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


@pytest.mark.parametrize("workload", ["bulk", "lines", "echo"])
def test_a_corrupted_run_posts_no_number(workload: str, context: _runner.Context) -> None:
    outcome = _runner.run_job(_job(workload, "corrupt"), context)
    assert outcome.error is not None
    assert not outcome.values
    report = _report.Report(metrics_for(workload, TINY), ["corrupt"], None)
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


# ---------------------------------------------------------------- planning and the command line


def test_plan_interleaves_repetitions_and_skips_select_above_its_limit() -> None:
    sizes = dataclasses.replace(TINY, repeat=2, idle_counts=(0, 10_000))
    jobs, notes = plan(["iostream", "asyncio-streams"], ["bulk", "idle"], "select", sizes)
    assert [job.rep for job in jobs] == sorted(job.rep for job in jobs)
    assert {job.variant.label for job in jobs} == {"iostream-select", "asyncio-streams"}
    assert not any(job.variant.poller == "select" and job.idle == 10_000 for job in jobs)
    assert any("FD_SETSIZE" in note for note in notes)


def test_unknown_peer_or_workload_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--peers", "no-such-peer"]) == 2
    assert "unknown peer" in capsys.readouterr().err
    assert main(["--workloads", "no-such-workload"]) == 2
    assert "unknown workload" in capsys.readouterr().err
    assert main(["--repeat", "0"]) == 2
    assert "--repeat" in capsys.readouterr().err


def test_report_ratios_and_targets(tmp_path: Path) -> None:
    metrics = metrics_for("bulk", TINY) + metrics_for("bigmsg", TINY)
    report = _report.Report(metrics, ["iostream-epoll", "asyncio-streams"], "iostream-epoll")
    for label, bulk, big in (("iostream-epoll", 300.0, 0.1), ("asyncio-streams", 100.0, 0.4)):
        job = _runner.Job("bulk", _runner.Variant("x", None, label), 1)
        report.add(_runner.Outcome(job, values={"bulk": bulk}))
        job = _runner.Job("bigmsg", _runner.Variant("x", None, label), 1)
        report.add(_runner.Outcome(job, values={"bigmsg-bytes": big, "bigmsg-until": big}))
    assert report.ratio(metrics[0], "iostream-epoll") == pytest.approx(3.0)
    assert report.ratio(metrics[1], "iostream-epoll") == pytest.approx(4.0)  # seconds: inverted
    rows = {row["metric"]: row for row in _report.target_rows(report)}
    assert rows["bulk"]["met"] is True
    assert rows["echo"]["met"] is None
    assert "3.00" in _report.markdown_table(report)


def test_load_meter_reports_other_processes_cores() -> None:
    from iostream.bench import _load

    meter = _load.LoadMeter()
    meter.start()
    foreign = meter.foreign()
    assert foreign is None or foreign >= 0.0
    assert _load.wait_quiet(0.0) == pytest.approx(0.0, abs=0.1)
