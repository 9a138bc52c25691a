"""``python -m iostream``: info, get and bench, as a user runs them.

``info`` and the error paths run in subprocesses (exit codes, one-line
errors, no traceback). ``get`` is tested against real local servers on
127.0.0.1 (port 0): Python's ``http.server`` with a small handler serving
Content-Length, chunked and read-until-close bodies, and the same over TLS
with a trustme certificate. The body tests run in-process on every poller
(``poller_name``); the exit-code tests run the real command line.
"""

from __future__ import annotations

import contextlib
import http.server
import io
import json
import os
import random
import socket
import ssl
import struct
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

import iostream
from iostream import _cli, pollers

#: The directory holding the iostream package under test: the checkout, or
#: site-packages when the tests run against an installed wheel (tox). The
#: subprocesses run from there so that they import the same copy.
PACKAGE_PARENT = Path(iostream.__file__).resolve().parent.parent

#: A body that contains the header delimiter and CRLFs, so a client that
#: confuses body and framing shows it.
BODY = random.Random(1234).randbytes(300_000) + b"\r\n\r\n0\r\n\r\nend"
CHUNKS = [b"hello ", b"", b"chunked\r\n", random.Random(5).randbytes(70_000), b"\r\n0\r\n"]
CHUNKED_BODY = b"".join(CHUNKS)


def run_cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[bytes]:
    """Run ``python -m iostream ARGS`` on the copy under test; return the result."""
    full_env = {k: v for k, v in os.environ.items() if k != pollers.ENV_VAR}
    full_env["PYTHONPATH"] = str(PACKAGE_PARENT) + os.pathsep + full_env.get("PYTHONPATH", "")
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "iostream", *args],
        cwd=PACKAGE_PARENT,
        env=full_env,
        capture_output=True,
        timeout=timeout,
        check=False,
    )


def assert_one_line_error(result: subprocess.CompletedProcess[bytes], code: int) -> str:
    """The command failed with *code*, one line on stderr, no traceback."""
    stderr = result.stderr.decode("utf-8", "replace")
    assert result.returncode == code, (result.returncode, stderr)
    assert "Traceback" not in stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("iostream: error: ")
    return lines[0]


# ---------------------------------------------------------------------- info


def test_info_default() -> None:
    """With no argument and no IOSTREAM_POLLER: the best available, and why."""
    result = run_cli("info")
    out = result.stdout.decode()
    assert result.returncode == 0, result.stderr
    assert f"poller:      {pollers.available()[0]}\n" in out
    assert "chosen by:   default: best available" in out
    assert ", ".join(pollers.available()) in out


def test_info_env_var_and_case() -> None:
    """IOSTREAM_POLLER picks the poller (case-insensitive) and is named as the reason."""
    result = run_cli("info", env={pollers.ENV_VAR: "SELECT"})
    out = result.stdout.decode()
    assert result.returncode == 0, result.stderr
    assert "poller:      select\n" in out
    assert "chosen by:   IOSTREAM_POLLER=SELECT" in out


def test_info_env_list_takes_first_available() -> None:
    """A preference list: the first available name wins."""
    unavailable = [n for n in ("kqueue", "devpoll", "epoll") if n not in pollers.available()]
    value = ",".join([*unavailable, "select", pollers.available()[0]])
    result = run_cli("info", "--json", env={pollers.ENV_VAR: value})
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["poller"] == "select"
    assert data["reason"] == f"IOSTREAM_POLLER={value}"


def test_info_empty_env_means_default() -> None:
    """An empty IOSTREAM_POLLER is the default."""
    result = run_cli("info", "--json", env={pollers.ENV_VAR: ""})
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["poller"] == pollers.available()[0]
    assert data["reason"] == "default: best available"


def test_info_argument_beats_env() -> None:
    """--poller wins over IOSTREAM_POLLER."""
    result = run_cli("info", "--poller", "select", env={pollers.ENV_VAR: "nonsense"})
    out = result.stdout.decode()
    assert result.returncode == 0, result.stderr
    assert "poller:      select\n" in out
    assert "chosen by:   argument --poller select" in out


def test_info_json_lists_unavailable_with_reasons() -> None:
    """Every known poller is either available or has a reason."""
    result = run_cli("info", "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["available"] == list(pollers.available())
    known = {"kqueue", "epoll", "devpoll", "poll", "select"}
    assert set(data["available"]) | set(data["unavailable"]) == known
    assert not set(data["available"]) & set(data["unavailable"])
    for name, why in data["unavailable"].items():
        assert why.strip(), name


@pytest.mark.parametrize("value", ["bogus", "epoll;poll", "sel ect"])
def test_info_bad_env_var_is_one_line_exit_2(value: str) -> None:
    """An unknown IOSTREAM_POLLER: one line on stderr, exit 2, no traceback."""
    result = run_cli("info", env={pollers.ENV_VAR: value})
    line = assert_one_line_error(result, 2)
    assert "select" in line  # names the known ones
    assert result.stdout == b""


def test_info_unavailable_poller_is_one_line_exit_2() -> None:
    """A known poller this OS lacks: one line naming what is available, exit 2."""
    missing = [n for n in ("kqueue", "devpoll", "epoll", "poll") if n not in pollers.available()]
    if not missing:
        pytest.skip("every poller is available here")
    result = run_cli("info", env={pollers.ENV_VAR: missing[0]})
    line = assert_one_line_error(result, 2)
    assert pollers.available()[0] in line


def test_info_bad_argument_is_one_line_exit_2() -> None:
    """--poller with an unknown name is the same one-line error."""
    assert_one_line_error(run_cli("info", "--poller", "nope"), 2)


def test_help_lists_subcommands_once_and_exit_codes() -> None:
    """--help names the program as invoked and lists each subcommand once."""
    result = run_cli("--help")
    assert result.returncode == 0
    out = result.stdout.decode()
    assert out.startswith(f"usage: {Path(sys.executable).name} -m iostream ")
    for name in ("info", "get", "run", "doctor", "bench"):
        lines = [line for line in out.splitlines() if line.split()[:1] == [name]]
        assert len(lines) == 1, (name, out)
    assert "{" not in out  # no {info,get,...} list repeating the commands
    get_help = run_cli("get", "--help").stdout.decode()
    for code, meaning in _cli.EXIT_CODES.items():
        assert f"{code}  {meaning}" in get_help
    assert "--cafile" in get_help and "--timeout" in get_help and "--poller" in get_help


def test_prog_name_follows_invocation(monkeypatch: pytest.MonkeyPatch) -> None:
    """``python -m iostream`` and a console script named ``iostream`` each see their name."""
    monkeypatch.setattr(sys, "argv", ["/somewhere/iostream/__main__.py"])
    monkeypatch.setattr(sys, "executable", "/venv/bin/python3.11")
    assert _cli.prog_name() == "python3.11 -m iostream"
    monkeypatch.setattr(sys, "argv", ["/venv/bin/iostream", "info"])
    assert _cli.prog_name() == "iostream"
    assert _cli.build_parser().format_usage().startswith("usage: iostream ")


@pytest.mark.parametrize(
    ("args", "help_of"),
    [
        (["--bogus"], ""),
        (["info", "--bogus"], ""),
        (["info", "--json", "extra"], ""),
        (["get"], " get"),
        (["get", "http://127.0.0.1/", "--timeout", "soon"], " get"),
        (["doctor", "--bogus"], " doctor"),
        (["doctor", "--timeout", "x"], " doctor"),
        (["bench", "--bogus"], " bench"),
        (["bench", "--repeat", "x"], " bench"),
        (["bench", "--poller", "bogus"], None),
        (["bench", "--peers", "bogus"], None),
        (["bench", "--workloads", "bogus"], None),
        (["bench", "--repeat", "0"], None),
    ],
)
def test_usage_errors_are_one_line_exit_2(args: list[str], help_of: str | None) -> None:
    """A bad option or argument, in every command: one ``iostream: error:`` line
    (pointing at the command's --help where argparse found it), exit 2, no usage block."""
    line = assert_one_line_error(run_cli(*args), 2)
    assert "usage:" not in line
    if help_of is not None:
        prog = f"{Path(sys.executable).name} -m iostream{help_of}"
        assert line.endswith(f"(see {prog} --help)"), line


def test_bench_help_names_the_program_as_invoked_and_every_library(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``bench --help`` shows the program as invoked (as the other commands do), and
    its description names every library among the default peers, trio included."""
    from iostream.bench import _main as bench_main

    result = run_cli("bench", "--help")
    assert result.returncode == 0, result.stderr
    out = " ".join(result.stdout.decode().split())
    assert out.startswith(f"usage: {Path(sys.executable).name} -m iostream bench ")
    for library in ("asyncio", "Tornado", "uvloop", "trio"):
        assert library in out, library
    monkeypatch.setattr(sys, "argv", ["/venv/bin/iostream", "bench", "--help"])
    assert bench_main.build_parser().format_usage().startswith("usage: iostream bench ")


def test_no_command_prints_help_exit_2() -> None:
    """No subcommand: usage and exit 2."""
    result = run_cli()
    assert result.returncode == 2
    assert b"info" in result.stdout


def test_version() -> None:
    """--version prints the one version."""
    from iostream._version import __version__

    result = run_cli("--version")
    assert result.returncode == 0
    assert result.stdout.decode().strip() == f"iostream {__version__}"


PASSTHROUGH_MODULES = {
    "run": "iostream._run",
    "doctor": "iostream._doctor",
    "bench": "iostream.bench",
}


@pytest.mark.parametrize(("command", "module"), list(PASSTHROUGH_MODULES.items()))
def test_passthrough_commands_get_raw_arguments(
    monkeypatch: pytest.MonkeyPatch, command: str, module: str
) -> None:
    """run, doctor and bench hand every remaining argument, untouched, to their main()."""
    import types

    seen: list[list[str]] = []
    fake = types.ModuleType(module)

    def fake_main(argv: list[str]) -> int:
        seen.append(argv)
        return 7

    fake.main = fake_main  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, module, fake)
    raw = ["--poller", "poll", "-m", "pkg.mod", "--help", "-v", "x y"]
    assert _cli.main(["-v", command, *raw]) == 7
    assert seen == [raw]


@pytest.mark.parametrize("command", ["run", "doctor", "bench"])
def test_ctrl_c_is_exit_130_except_for_runs_program(
    monkeypatch: pytest.MonkeyPatch, command: str
) -> None:
    """Ctrl-C ends iostream's own commands with 130; run's program's interrupt passes
    through to the interpreter, which ends the process by SIGINT as under python."""
    import types

    module = PASSTHROUGH_MODULES[command]
    fake = types.ModuleType(module)

    def fake_main(argv: list[str]) -> int:
        raise KeyboardInterrupt

    fake.main = fake_main  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, module, fake)
    if command == "run":
        with pytest.raises(KeyboardInterrupt):
            _cli.main([command, "prog.py"])
    else:
        assert _cli.main([command]) == _cli.EXIT_INTERRUPTED == 130


# ------------------------------------------------------------ URL / HTTP units


@pytest.mark.parametrize(
    ("url", "host", "port", "target", "header"),
    [
        ("http://127.0.0.1/", "127.0.0.1", 80, "/", "127.0.0.1"),
        ("http://127.0.0.1", "127.0.0.1", 80, "/", "127.0.0.1"),
        ("https://Example.ORG:8443/a/b?x=1&y=2", "example.org", 8443, "/a/b?x=1&y=2", None),
        ("http://[::1]:8080/p", "::1", 8080, "/p", "[::1]:8080"),
        ("https://127.0.0.1:443/", "127.0.0.1", 443, "/", "127.0.0.1"),
        ("http://h/caf\u00e9", "h", 80, "/caf%C3%A9", "h"),
    ],
)
def test_parse_url(url: str, host: str, port: int, target: str, header: str | None) -> None:
    """Host, port, request target and Host header come out right."""
    t = _cli.parse_url(url)
    assert (t.host, t.port, t.request_target) == (host, port, target)
    if header is not None:
        assert t.host_header == header


@pytest.mark.parametrize(
    "url",
    ["ftp://127.0.0.1/", "http://", "127.0.0.1:80", "http://127.0.0.1:99999/", "http://h:x/", ""],
)
def test_parse_url_rejects(url: str) -> None:
    """Anything but a usable http(s) URL is a usage error (exit 2)."""
    with pytest.raises(_cli.CLIError) as info:
        _cli.parse_url(url)
    assert info.value.code == 2


def test_where_brackets_ipv6() -> None:
    """Messages show ``[::1]:80``, never the ambiguous ``::1:80``."""
    assert _cli.where("::1", 80) == "[::1]:80"
    assert _cli.where("127.0.0.1", 80) == "127.0.0.1:80"


def test_classify_error() -> None:
    """Each failure class maps to its exit code."""
    assert _cli.classify_error(ConnectionRefusedError())[0] == 3
    assert _cli.classify_error(TimeoutError())[0] == 4
    assert _cli.classify_error(ssl.SSLCertVerificationError())[0] == 5
    assert _cli.classify_error(ssl.SSLError())[0] == 5
    assert _cli.classify_error(ConnectionResetError())[0] == 1
    assert _cli.classify_error(ValueError())[0] == 1


# --------------------------------------------------------------- local servers


class Handler(http.server.BaseHTTPRequestHandler):
    """Serves the bodies the ``get`` tests fetch."""

    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        """Keep the test output quiet."""

    def do_GET(self) -> None:
        """Dispatch on the path."""
        path = self.path
        if path == "/length":
            self.send_response(200)
            self.send_header("Content-Length", str(len(BODY)))
            self.end_headers()
            self.wfile.write(BODY)
        elif path == "/chunked":
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for piece in CHUNKS:
                if piece:  # a zero-size chunk would end the body
                    self.wfile.write(b"%x;ext=1\r\n%s\r\n" % (len(piece), piece))
            self.wfile.write(b"0\r\nX-Trailer: done\r\n\r\n")
        elif path == "/close":
            self.send_response(200)
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(BODY)
            self.close_connection = True
        elif path == "/empty":
            self.send_response(204)
            self.end_headers()
        elif path == "/zero":
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif path == "/interim":
            self.wfile.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")
        elif path.startswith("/echo"):
            text = f"{self.command} {self.path}\nhost={self.headers['Host']}\n"
            text += f"connection={self.headers['Connection']}\n"
            data = text.encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        elif path == "/short":
            self.send_response(200)
            self.send_header("Content-Length", "1000")
            self.end_headers()
            self.wfile.write(b"x" * 10)
            self.close_connection = True
        elif path == "/garbage":
            self.wfile.write(b"SPAM SPAM SPAM\r\n\r\n")
            self.close_connection = True
        elif path == "/badchunk":
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            self.wfile.write(b"zz\r\nhello\r\n0\r\n\r\n")
            self.close_connection = True
        else:
            self.send_error(404)


class QuietServer(http.server.ThreadingHTTPServer):
    """A threading HTTP server that does not print failed TLS handshakes."""

    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        """Failures are the point of some tests: stay quiet."""


@contextlib.contextmanager
def serve(context: ssl.SSLContext | None = None) -> Iterator[int]:
    """Run a :class:`Handler` server on 127.0.0.1:0 in a thread; yield its port."""
    server = QuietServer(("127.0.0.1", 0), Handler)
    if context is not None:
        server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.daemon = True
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


@pytest.fixture(scope="module")
def http_port() -> Iterator[int]:
    """A plain HTTP server."""
    with serve() as port:
        yield port


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, int, Path]]:
    """Two HTTPS servers with trustme certificates: ``(port, wrong_host_port, ca_pem)``.

    The first certificate is for 127.0.0.1 and localhost; the second for a
    name the URL never uses.
    """
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    ca_pem = tmp_path_factory.mktemp("tls") / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_pem))
    good = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(good)
    wrong = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("wrong-host.example").configure_cert(wrong)
    with serve(good) as port, serve(wrong) as wrong_port:
        yield port, wrong_port, ca_pem


def fetch(url: str, poller: str | None = None, **kwargs: object) -> tuple[int, str, bytes]:
    """Run ``get`` in-process; return ``(exit code, message, body)``."""
    out = io.BytesIO()
    code, message = _cli.fetch(url, out, poller=poller, **kwargs)  # type: ignore[arg-type]
    return code, message, out.getvalue()


# ------------------------------------------------------------------ get: http


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/length", BODY),
        ("/chunked", CHUNKED_BODY),
        ("/close", BODY),
        ("/empty", b""),
        ("/zero", b""),
        ("/interim", b"ok"),
    ],
)
def test_get_bodies(http_port: int, poller_name: str, path: str, body: bytes) -> None:
    """Content-Length, chunked and read-until-close bodies arrive intact on every poller."""
    code, message, got = fetch(f"http://127.0.0.1:{http_port}{path}", poller_name, timeout=20)
    assert (code, message) == (0, "")
    assert got == body


def test_get_sends_host_and_connection_close(http_port: int) -> None:
    """The request is HTTP/1.1 GET with Host (with port) and Connection: close."""
    code, message, got = fetch(f"http://127.0.0.1:{http_port}/echo?a=1&b=2", timeout=20)
    assert (code, message) == (0, "")
    assert got.decode() == (f"GET /echo?a=1&b=2\nhost=127.0.0.1:{http_port}\nconnection=close\n")


def test_get_localhost_resolves(http_port: int) -> None:
    """A host name works (``localhost`` may resolve to ::1 first: the next address is tried)."""
    code, message, got = fetch(f"http://localhost:{http_port}/length", timeout=20)
    assert (code, message) == (0, "")
    assert got == BODY


def test_get_include_headers(http_port: int) -> None:
    """-i prints the status line and headers before the body."""
    code, _, got = fetch(f"http://127.0.0.1:{http_port}/zero", include_headers=True, timeout=20)
    assert code == 0
    assert got.startswith(b"HTTP/1.") and b" 200 " in got.split(b"\r\n")[0]
    assert got.endswith(b"\r\n\r\n")


@pytest.mark.parametrize("path", ["/short", "/garbage", "/badchunk"])
def test_get_bad_response_exit_1(http_port: int, path: str) -> None:
    """A truncated body, a non-HTTP reply or a bad chunk: exit 1."""
    code, message, _ = fetch(f"http://127.0.0.1:{http_port}{path}", timeout=20)
    assert code == 1
    assert message


def test_get_cli_prints_body_to_stdout(http_port: int) -> None:
    """The real command line writes the body, bytes for bytes, to stdout."""
    result = run_cli("get", f"http://127.0.0.1:{http_port}/chunked", "--poller", "select")
    assert result.returncode == 0, result.stderr
    assert result.stdout == CHUNKED_BODY
    assert result.stderr == b""


# ----------------------------------------------------------------- get: https


def test_get_https_with_cafile(tls: tuple[int, int, Path], poller_name: str) -> None:
    """https with --cafile: verified, body intact."""
    port, _, ca_pem = tls
    code, message, got = fetch(
        f"https://127.0.0.1:{port}/length", poller_name, cafile=str(ca_pem), timeout=20
    )
    assert (code, message) == (0, "")
    assert got == BODY


def test_get_https_cli_chunked(tls: tuple[int, int, Path]) -> None:
    """The command line over TLS, chunked body."""
    port, _, ca_pem = tls
    result = run_cli("get", f"https://localhost:{port}/chunked", "--cafile", str(ca_pem))
    assert result.returncode == 0, result.stderr
    assert result.stdout == CHUNKED_BODY


def test_get_https_untrusted_exit_5(tls: tuple[int, int, Path]) -> None:
    """Without --cafile the test CA is not trusted: exit 5, one line."""
    port, _, _ = tls
    result = run_cli("get", f"https://127.0.0.1:{port}/length", "--timeout", "20")
    line = assert_one_line_error(result, 5)
    assert "TLS" in line
    assert result.stdout == b""


def test_get_https_wrong_host_exit_5(tls: tuple[int, int, Path]) -> None:
    """A certificate for another host name: exit 5 even with the right CA."""
    _, wrong_port, ca_pem = tls
    result = run_cli("get", f"https://127.0.0.1:{wrong_port}/", "--cafile", str(ca_pem))
    assert_one_line_error(result, 5)


def test_get_missing_cafile_exit_2(tmp_path: Path) -> None:
    """--cafile that does not exist is a usage error."""
    result = run_cli("get", "https://127.0.0.1:1/", "--cafile", str(tmp_path / "none.pem"))
    assert_one_line_error(result, 2)


# ---------------------------------------------------------- get: exit codes


def _unused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def test_get_refused_exit_3() -> None:
    """Nothing listens on the port: exit 3, one line."""
    result = run_cli("get", f"http://127.0.0.1:{_unused_port()}/", "--timeout", "20")
    line = assert_one_line_error(result, 3)
    assert "refused" in line


def test_get_timeout_exit_4() -> None:
    """A server that accepts (in the backlog) and never answers: exit 4 after --timeout."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        port = listener.getsockname()[1]
        result = run_cli("get", f"http://127.0.0.1:{port}/", "--timeout", "0.5", timeout=30)
    line = assert_one_line_error(result, 4)
    assert "timed out" in line


@pytest.mark.parametrize(
    "url", ["ftp://127.0.0.1/", "http://", "not a url", "http://127.0.0.1:99999/"]
)
def test_get_bad_url_exit_2(url: str) -> None:
    """A bad URL: exit 2, one line, nothing on stdout."""
    result = run_cli("get", url)
    line = assert_one_line_error(result, 2)
    assert "URL" in line
    assert result.stdout == b""


def test_get_bad_poller_exit_2() -> None:
    """get with a bad IOSTREAM_POLLER: exit 2, one line."""
    result = run_cli("get", "http://127.0.0.1:1/", env={pollers.ENV_VAR: "bogus"})
    assert_one_line_error(result, 2)


def test_get_bad_timeout_exit_2() -> None:
    """A non-positive --timeout is a usage error."""
    assert_one_line_error(run_cli("get", "http://127.0.0.1:1/", "--timeout", "0"), 2)


def test_get_without_h11_prints_the_install_command(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without h11: one line naming the exact pip command, exit 2, before any network use."""
    monkeypatch.setitem(sys.modules, "h11", None)  # makes `import h11` raise ImportError
    assert _cli.main(["get", "http://127.0.0.1:1/"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.strip().splitlines() == [
        "iostream: error: get needs the h11 package: python -m pip install 'h11>=0.14'"
    ]


def test_h11_install_hint_is_the_http_extra_requirement() -> None:
    """The command ``get`` prints installs what the ``http`` extra does, from the
    package index, whether or not iostream itself was installed from there (the
    ``iostream-loop`` distribution is not published yet: no hint may name it)."""
    tomllib = pytest.importorskip("tomllib")
    with open(Path(__file__).resolve().parent.parent / "pyproject.toml", "rb") as f:
        extras = tomllib.load(f)["project"]["optional-dependencies"]
    assert extras["http"] == ["h11>=0.14"]
    assert _cli.H11_INSTALL == "python -m pip install 'h11>=0.14'"
    assert "iostream-loop" not in _cli.H11_INSTALL


def test_get_reset_mid_body_is_not_success() -> None:
    """A body that runs to the close, cut by a reset: exit 1, not a truncated success."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        port = listener.getsockname()[1]

        def serve_then_reset() -> None:
            conn, _ = listener.accept()
            with conn:
                conn.recv(65536)
                conn.sendall(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\npartial body")
                # SO_LINGER 0: close() sends RST instead of FIN.
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))

        thread = threading.Thread(target=serve_then_reset, daemon=True)
        thread.start()
        code, message, _ = fetch(f"http://127.0.0.1:{port}/", timeout=20)
        thread.join(10)
    assert code == 1
    assert "reset" in message.lower(), message


def test_get_ipv6_refused_message_is_bracketed() -> None:
    """An IPv6 address in an error message is bracketed (``[::1]:port``)."""
    try:
        probe = socket.socket(socket.AF_INET6)
    except OSError:
        pytest.skip("no IPv6 here")
    with probe:
        try:
            probe.bind(("::1", 0))
        except OSError:
            pytest.skip("no IPv6 loopback here")
        port = probe.getsockname()[1]  # bound, not listening: connecting is refused
        code, message, _ = fetch(f"http://[::1]:{port}/", timeout=20)
    assert code == 3
    assert f"[::1]:{port}" in message


# ---------------------------------------------------------- CLI manners: stdout


def run_cli_to(stdout: int, *args: str) -> subprocess.CompletedProcess[bytes]:
    """``python -m iostream ARGS`` with its stdout on the file descriptor *stdout*."""
    env = {k: v for k, v in os.environ.items() if k != pollers.ENV_VAR}
    env["PYTHONPATH"] = str(PACKAGE_PARENT) + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run(
        [sys.executable, "-m", "iostream", *args],
        cwd=PACKAGE_PARENT,
        env=env,
        stdout=stdout,
        stderr=subprocess.PIPE,
        timeout=60,
        check=False,
    )


@contextlib.contextmanager
def closed_pipe() -> Iterator[int]:
    """The write end of a pipe whose reader has gone (``| head`` after its line)."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        yield write_end
    finally:
        os.close(write_end)


@contextlib.contextmanager
def dev_full() -> Iterator[int]:
    """/dev/full: every write fails with ENOSPC (a full disk)."""
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full on this OS")
    fd = os.open("/dev/full", os.O_WRONLY)
    try:
        yield fd
    finally:
        os.close(fd)


def assert_local_write_error(result: subprocess.CompletedProcess[bytes]) -> None:
    """Exit 1, one line that says stdout could not be written, never "network"."""
    line = assert_one_line_error(result, 1)
    assert "cannot write to standard output" in line
    assert "network" not in line


@pytest.mark.parametrize(
    "args",
    [
        ["info"],
        ["info", "--json"],
        ["--help"],
        ["get", "--help"],
        ["doctor", "--help"],
        ["bench", "--help"],
    ],
)
def test_info_to_closed_pipe_is_one_line(args: list[str]) -> None:
    """``info --json | head -1`` (and ``--help | head``): one line on stderr, no traceback."""
    with closed_pipe() as fd:
        assert_local_write_error(run_cli_to(fd, *args))


@pytest.mark.parametrize(
    "args",
    [
        ["info"],
        ["info", "--json"],
        ["--help"],
        ["--version"],
        ["doctor", "--help"],
        ["bench", "--help"],
    ],
)
def test_info_to_full_disk_is_one_line(args: list[str]) -> None:
    """``info > /dev/full`` (and every ``--help``, ``--version``): one line on stderr,
    no traceback, exit 1 (argparse alone would swallow the error and exit 0)."""
    with dev_full() as fd:
        assert_local_write_error(run_cli_to(fd, *args))


@pytest.mark.parametrize("path", ["/length", "/zero"])
def test_get_to_full_disk_is_a_local_error(http_port: int, path: str) -> None:
    """``get URL > /dev/full``: a local write error, not a network error (big and tiny body)."""
    with dev_full() as fd:
        result = run_cli_to(fd, "get", "-i", f"http://127.0.0.1:{http_port}{path}")
    assert_local_write_error(result)


def test_get_to_closed_pipe_is_one_line(http_port: int) -> None:
    """``get URL | head -c 10`` after head left: one line, no traceback."""
    with closed_pipe() as fd:
        assert_local_write_error(run_cli_to(fd, "get", f"http://127.0.0.1:{http_port}/length"))


def test_get_include_headers_as_sent(http_port: int) -> None:
    """-i prints the status line and the headers as the server sent them, then the body."""
    code, _, got = fetch(f"http://127.0.0.1:{http_port}/echo", include_headers=True, timeout=20)
    assert code == 0
    head, _, body = got.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    assert lines[0] == b"HTTP/1.1 200 OK"
    assert b"Content-Length: %d" % len(body) in lines[1:]
    assert body.startswith(b"GET /echo\n")


def _python39() -> str | None:
    """A CPython 3.9 interpreter on this machine (pyenv's or on PATH), if any."""
    import glob
    import shutil

    root = os.environ.get("PYENV_ROOT") or os.path.expanduser("~/.pyenv")
    found = sorted(glob.glob(os.path.join(root, "versions", "3.9*", "bin", "python3.9")))
    return found[-1] if found else shutil.which("python3.9")


def test_python39_gets_a_clear_message() -> None:
    """``python3.9 -m iostream info``: "needs Python 3.10+" on one line, not a TypeError."""
    python39 = _python39()
    if python39 is None:
        pytest.skip("no Python 3.9 on this machine")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(PACKAGE_PARENT)
    result = subprocess.run(
        [python39, "-m", "iostream", "info"],
        cwd=PACKAGE_PARENT,
        env=env,
        capture_output=True,
        timeout=60,
        check=False,
    )
    stderr = result.stderr.decode("utf-8", "replace")
    assert result.returncode == 1
    assert "Traceback" not in stderr and "TypeError" not in stderr
    assert "iostream needs Python 3.10+; this is Python 3.9" in stderr
    assert len(stderr.strip().splitlines()) == 1, stderr


def test_passthrough_output_is_flushed_and_checked(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """What doctor or bench printed is flushed by main(): a full disk is one line, exit 1."""
    import types

    class FullStdout(io.StringIO):
        def flush(self) -> None:
            raise OSError(28, "No space left on device")

    fake = types.ModuleType("iostream._doctor")
    fake.main = lambda argv: print("table") or 0  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "iostream._doctor", fake)
    monkeypatch.setattr(sys, "stdout", FullStdout())
    assert _cli.main(["doctor"]) == 1
    assert capsys.readouterr().err == (
        "iostream: error: cannot write to standard output: No space left on device\n"
    )


def test_info_says_when_the_default_skipped_a_broken_backend(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A backend that fails the socket probe is unavailable, and the reason says it was skipped."""
    here = pollers.available()
    if len(here) < 2:
        pytest.skip("needs two pollers")
    best = here[0]
    monkeypatch.delenv(pollers.ENV_VAR, raising=False)
    # pollers._probe is the one place both choose() and unavailable_reasons() ask.
    monkeypatch.setattr(
        pollers, "_probe", lambda name: "failed a socket probe: test" if name == best else None
    )
    info = _cli.poller_info(None)
    assert info.chosen == here[1]
    assert info.reason == f"default: best available (skipped {best}: failed the socket probe)"
    assert best not in info.available
    assert info.unavailable[best] == "failed a socket probe: test"


def test_run_leaves_logging_to_the_program(monkeypatch: pytest.MonkeyPatch) -> None:
    """``run`` adds no handler of its own: the program's iostream errors reach stderr
    through logging's last resort, as under ``python SCRIPT``."""
    import logging
    import types

    logger = logging.getLogger("iostream")
    monkeypatch.setattr(logger, "handlers", [])
    seen: list[list[logging.Handler]] = []
    fake = types.ModuleType("iostream._run")

    def fake_main(argv: list[str]) -> int:
        seen.append(list(logger.handlers))
        return 0

    fake.main = fake_main  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "iostream._run", fake)
    assert _cli.main(["run", "script.py"]) == 0
    assert seen == [[]]
    assert _cli.main(["info"]) == 0  # the CLI's own commands stay quiet
    assert any(isinstance(h, logging.NullHandler) for h in logger.handlers)
