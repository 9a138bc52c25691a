"""The command line: ``python -m iostream info | get | run | doctor | bench``.

- ``info`` says which poller this machine would use, why (the ``--poller``
  argument, ``IOSTREAM_POLLER``, or the default), which pollers are
  available, and why the others are not.
- ``get URL`` fetches an ``http://`` or ``https://`` URL with
  :class:`~iostream.IOStream` / :class:`~iostream.SSLIOStream` and writes
  the body to standard output: the classic IOStream example. The HTTP/1.1
  framing is the ``h11`` package's (the optional ``http`` extra); without it
  ``get`` prints the command that installs it and exits 2. Failures are one
  line on standard error and an exit code that says what went wrong
  (:data:`EXIT_CODES`).
- ``run``, ``doctor`` and ``bench`` hand their raw arguments to
  ``iostream._run.main``, ``iostream._doctor.main`` and
  ``iostream.bench.main``, imported only when the command runs.

Every command returns an exit code instead of raising: a user error, a
closed stdout (``| head``) or a full disk is one line on standard error,
never a traceback. The exception is ``run``'s program, which owns its exit
as under ``python SCRIPT`` (a traceback, or death by SIGINT on Ctrl-C).
"""

from __future__ import annotations

import argparse
import importlib
import io
import json
import logging
import os
import platform
import socket
import ssl
import sys
import urllib.parse
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, BinaryIO, NoReturn

from iostream._version import __version__

if TYPE_CHECKING:
    from iostream import IOLoop, IOStream
    from iostream.ioloop import Timeout

#: Exit codes of ``get`` (and of the other commands where they apply).
EXIT_OK = 0
#: Another network error, a response that is not valid HTTP/1.x, or a local
#: failure to write the output (a closed pipe, a full disk).
EXIT_ERROR = 1
#: A bad URL or a bad argument (also argparse's code for a usage error).
EXIT_USAGE = 2
#: The server refused the connection.
EXIT_REFUSED = 3
#: Connecting, or waiting for the server, took longer than ``--timeout``.
EXIT_TIMEOUT = 4
#: The TLS handshake failed (untrusted or wrong-host certificate, protocol error).
EXIT_TLS = 5
#: Ctrl-C (``KeyboardInterrupt``) ended the command: 128 + SIGINT, as shells
#: report it. ``run`` is the exception: its program's interrupt ends the
#: process by SIGINT, as under ``python SCRIPT``.
EXIT_INTERRUPTED = 130

#: Exit code -> meaning, as ``--help`` and the README show them.
EXIT_CODES: dict[int, str] = {
    EXIT_OK: "success",
    EXIT_ERROR: "another error: network, a bad HTTP response, or the output could not be written",
    EXIT_USAGE: "bad URL or bad argument (including a bad IOSTREAM_POLLER)",
    EXIT_REFUSED: "connection refused",
    EXIT_TIMEOUT: "timed out",
    EXIT_TLS: "TLS failure (certificate not trusted, wrong host, handshake error)",
    EXIT_INTERRUPTED: "interrupted (Ctrl-C)",
}

#: The one command that installs the optional HTTP framing ``get`` needs: the
#: ``http`` extra's requirement itself, which works however iostream was
#: installed (the ``iostream-loop`` distribution is not on the package index
#: yet, so ``pip install 'iostream-loop[http]'`` would not find it).
H11_INSTALL = "python -m pip install 'h11>=0.14'"

log = logging.getLogger("iostream.cli")


class CLIError(Exception):
    """A failure to report as one line on stderr with exit code ``code``."""

    def __init__(self, message: str, code: int = EXIT_ERROR) -> None:
        super().__init__(message)
        self.code = code


def _one_line(text: object) -> str:
    """*text* as a single line (exception messages may span several)."""
    return " ".join(str(text).split())


def _fail(message: str, code: int) -> int:
    print(f"iostream: error: {_one_line(message)}", file=sys.stderr)
    return code


def write_stdout(text: str) -> None:
    """Write *text* to standard output and flush it now.

    A local write failure (the reader closed the pipe, as ``| head`` does;
    a full disk) raises :class:`CLIError` with a one-line message that says
    so; it is never reported as a network error.
    """
    try:
        sys.stdout.write(text)
        sys.stdout.flush()
    except OSError as exc:
        raise _stdout_failed(exc) from None


def _stdout_failed(exc: OSError) -> CLIError:
    """The error for a failed write to stdout (after :func:`_silence_stdout`)."""
    _silence_stdout()
    return CLIError(f"cannot write to standard output: {_one_line(exc.strerror or exc)}")


def _silence_stdout() -> None:
    """Point the stdout file descriptor at the null device.

    Python flushes ``sys.stdout`` again at exit; with the broken file still
    behind it, that would print "Exception ignored ..." after our one line.
    """
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, sys.stdout.fileno())
        finally:
            os.close(devnull)
    except (OSError, ValueError, io.UnsupportedOperation):
        pass  # not a real file (a test's capture): nothing will flush it at exit


# --------------------------------------------------------------------- info


@dataclass
class PollerInfo:
    """What ``info`` reports: the chosen poller and how it was chosen."""

    chosen: str
    reason: str
    available: list[str]
    unavailable: dict[str, str] = field(default_factory=dict)


def poller_info(poller: str | None) -> PollerInfo:
    """Work out which poller ``choose()`` gives, and why.

    Raises ``ValueError`` / ``PollerUnavailable`` (a ``RuntimeError``) from
    :func:`iostream.pollers.choose` for a bad name.
    """
    from iostream import pollers

    env_value = os.environ.get(pollers.ENV_VAR, "")
    if poller is not None and poller.strip():
        cls = pollers.choose(poller)
        reason = f"argument --poller {poller}"
    elif env_value.strip():
        cls = pollers.choose()
        reason = f"{pollers.ENV_VAR}={env_value}"
    else:
        cls = pollers.choose()
        reason = "default: best available"
    unavailable = pollers.unavailable_reasons()
    # A backend this OS has but that failed the socket probe is unavailable
    # (with its reason); the automatic choice passed over it: say so.
    here = pollers.available()
    skipped = [name for name in here[: here.index(cls.name)] if name in unavailable]
    if skipped and reason.startswith("default"):
        reason += f" (skipped {', '.join(skipped)}: failed the socket probe)"
    return PollerInfo(
        chosen=cls.name,
        reason=reason,
        available=[name for name in here if name not in unavailable],
        unavailable=unavailable,
    )


def cmd_info(args: argparse.Namespace) -> int:
    """``info``: print the chosen poller, why, and what is (un)available."""
    try:
        info = poller_info(args.poller)
    except (ValueError, RuntimeError) as exc:
        return _fail(str(exc), EXIT_USAGE)
    if args.json:
        data = {
            "version": __version__,
            "python": platform.python_version(),
            "platform": sys.platform,
            "poller": info.chosen,
            "reason": info.reason,
            "available": info.available,
            "unavailable": info.unavailable,
        }
        write_stdout(json.dumps(data, indent=2) + "\n")
        return EXIT_OK
    lines = [
        f"iostream {__version__} on Python {platform.python_version()} ({sys.platform})",
        f"poller:      {info.chosen}",
        f"chosen by:   {info.reason}",
        f"available:   {', '.join(info.available) or '(none)'}  (best first)",
    ]
    if info.unavailable:
        lines.append("unavailable:")
        width = max(len(name) for name in info.unavailable)
        lines += [f"  {name:<{width}}  {_one_line(why)}" for name, why in info.unavailable.items()]
    else:
        lines.append("unavailable: (none)")
    write_stdout("\n".join(lines) + "\n")
    return EXIT_OK


# ---------------------------------------------------------------------- get


@dataclass
class Target:
    """A parsed ``http(s)://`` URL: where to connect and what to ask for."""

    scheme: str
    host: str
    port: int
    request_target: str
    host_header: str


def parse_url(url: str) -> Target:
    """Parse *url*; raise :class:`CLIError` (exit 2) unless it is a usable http(s) URL."""
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise CLIError(f"bad URL {url!r}: {exc}", EXIT_USAGE) from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise CLIError(f"bad URL {url!r}: the scheme must be http:// or https://", EXIT_USAGE)
    host = parts.hostname
    if not host:
        raise CLIError(f"bad URL {url!r}: no host", EXIT_USAGE)
    if any(ch.isspace() for ch in url):
        raise CLIError(f"bad URL {url!r}: contains white space", EXIT_USAGE)
    default_port = 443 if scheme == "https" else 80
    if port is None:
        port = default_port
    if port == 0:
        raise CLIError(f"bad URL {url!r}: port 0", EXIT_USAGE)
    host_in_header = f"[{host}]" if ":" in host else host
    if port != default_port:
        host_in_header = f"{host_in_header}:{port}"
    target = parts.path or "/"
    if parts.query:
        target = f"{target}?{parts.query}"
    # Non-ASCII in a URL must arrive percent-encoded on the wire.
    target = urllib.parse.quote(target, safe="/?&=%:@!$'()*+,;~-._")
    try:
        host_in_header.encode("ascii")
    except UnicodeEncodeError:
        try:
            host_in_header = host_in_header.encode("idna").decode("ascii")
        except UnicodeError as exc:
            raise CLIError(f"bad URL {url!r}: bad host name: {exc}", EXIT_USAGE) from None
    return Target(scheme, host, port, target, host_in_header)


def where(host: str, port: int) -> str:
    """``host:port`` for messages, an IPv6 address in brackets: ``[::1]:8080``."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class _OutputError(CLIError):
    """Writing the body failed locally (a closed pipe, a full disk)."""


class HTTPGet:
    """One ``GET`` over an IOStream, as a coroutine: connect, send, stream the body.

    The HTTP/1.1 framing (status line, headers, Content-Length, chunked,
    read-until-close, interim 1xx responses) is h11's; this class moves
    bytes between the stream and an ``h11.Connection``, and turns what went
    wrong into an exit code and a one-line message. An inactivity timer
    (re-armed by every bit of progress) closes the stream after *timeout*
    seconds of silence, which ends whatever is being awaited.
    """

    def __init__(
        self,
        io_loop: IOLoop,
        target: Target,
        out: BinaryIO,
        ssl_context: ssl.SSLContext | None,
        timeout: float,
        include_headers: bool = False,
        out_name: str = "the output",
    ) -> None:
        self.io_loop = io_loop
        self.target = target
        self.out = out
        self.out_name = out_name
        self.ssl_context = ssl_context
        self.timeout = timeout
        self.include_headers = include_headers
        self.stream: IOStream | None = None
        self.connected = False
        self.timed_out = False
        self._timer: Timeout | None = None

    async def run(self, addresses: list[tuple[int, Any]]) -> tuple[int, str]:
        """Fetch from the first of *addresses* that connects; return ``(exit code, message)``."""
        import h11

        self._arm_timer()
        try:
            await self._exchange(addresses)
            return EXIT_OK, ""
        except _OutputError as exc:
            return exc.code, str(exc)
        except h11.RemoteProtocolError as exc:
            return EXIT_ERROR, f"bad response: {_one_line(exc)}"
        except OSError as exc:  # StreamClosedError and ssl.SSLError are OSErrors
            return self._failure(exc)
        finally:
            if self._timer is not None:
                self.io_loop.remove_timeout(self._timer)
            if self.stream is not None:
                self.stream.close()

    def _arm_timer(self) -> None:
        if self._timer is not None:
            self.io_loop.remove_timeout(self._timer)
        self._timer = self.io_loop.call_later(self.timeout, self._on_timeout)

    def _on_timeout(self) -> None:
        self._timer = None
        self.timed_out = True
        if self.stream is not None:
            self.stream.close()  # the pending connect, write or read fails

    async def _connect(self, addresses: list[tuple[int, Any]]) -> IOStream:
        from iostream import IOStream, SSLIOStream

        for index, (family, sockaddr) in enumerate(addresses):
            sock = socket.socket(family, socket.SOCK_STREAM)
            stream: IOStream
            if self.ssl_context is not None:
                stream = SSLIOStream(sock, ssl_options=self.ssl_context, io_loop=self.io_loop)
            else:
                stream = IOStream(sock, io_loop=self.io_loop)
            self.stream = stream
            hostname = self.target.host if self.ssl_context is not None else None
            try:
                await stream.connect(sockaddr, server_hostname=hostname)
                return stream
            except ssl.SSLError:
                raise  # the server answered: another address would not help
            except OSError as exc:
                if self.timed_out or index == len(addresses) - 1:
                    raise
                # Try the next address (e.g. 127.0.0.1 after ::1 for "localhost").
                log.debug("connect to %s failed (%s); trying the next address", sockaddr, exc)
                stream.close()
        raise AssertionError("no address to connect to")  # _resolve never gives none

    async def _exchange(self, addresses: list[tuple[int, Any]]) -> None:
        import h11

        stream = await self._connect(addresses)
        self.connected = True
        self._arm_timer()
        http = h11.Connection(our_role=h11.CLIENT)
        t = self.target
        request = h11.Request(
            method="GET",
            target=t.request_target,
            headers=[
                ("Host", t.host_header),
                ("User-Agent", f"iostream/{__version__}"),
                ("Accept", "*/*"),
                ("Accept-Encoding", "identity"),
                ("Connection", "close"),
            ],
        )
        stream.write((http.send(request) or b"") + (http.send(h11.EndOfMessage()) or b""))
        while True:
            event = http.next_event()
            if event is h11.NEED_DATA:
                http.receive_data(await self._receive(stream))
            elif isinstance(event, h11.Response):
                reason = event.reason.decode("iso-8859-1")
                log.info("HTTP/%s %s %s", event.http_version.decode(), event.status_code, reason)
                if self.include_headers:
                    self._write_out(_format_head(event))
            elif isinstance(event, h11.Data):
                self._write_out(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage):
                return
            elif isinstance(event, h11.ConnectionClosed):
                raise h11.RemoteProtocolError("the server closed the connection without a response")
            # h11.InformationalResponse (100 Continue, 103 Early Hints): the
            # real response follows.

    async def _receive(self, stream: IOStream) -> bytes:
        """The next bytes from the server; ``b""`` when it closed cleanly."""
        from iostream import StreamClosedError

        try:
            data: bytes = await stream.read_bytes(65536, partial=True)
        except StreamClosedError as exc:
            if exc.real_error is not None or self.timed_out:
                raise  # a reset is not the end of a read-until-close body
            return b""  # EOF: h11 says whether the response was complete
        self._arm_timer()
        return data

    def _write_out(self, data: bytes) -> None:
        if not data:
            return
        try:
            self.out.write(data)
        except OSError as exc:
            # A local failure (closed pipe, full disk), not a network error.
            detail = _one_line(exc.strerror or exc)
            raise _OutputError(f"cannot write to {self.out_name}: {detail}") from None

    def _failure(self, exc: OSError) -> tuple[int, str]:
        """``(exit code, message)`` for what ended the exchange."""
        from iostream import StreamClosedError

        place = where(self.target.host, self.target.port)
        if self.timed_out:
            what = "waiting for the server" if self.connected else "connecting"
            return EXIT_TIMEOUT, f"timed out after {self.timeout:g}s {what} ({place})"
        error: BaseException = exc
        if isinstance(exc, StreamClosedError):
            if exc.real_error is None:
                return EXIT_ERROR, f"the server closed the connection ({place})"
            error = exc.real_error
        code, what = classify_error(error)
        detail = _one_line(getattr(error, "strerror", None) or error) or type(error).__name__
        if isinstance(error, ssl.SSLError):
            detail = _one_line(getattr(error, "verify_message", None) or error.reason or error)
        return code, f"{what} ({place}): {detail}"


def _format_head(response: Any) -> bytes:
    """The status line and headers of an ``h11.Response``, as they came, for ``-i``."""
    lines = [b"HTTP/%s %d %s" % (response.http_version, response.status_code, response.reason)]
    lines += [name + b": " + value for name, value in response.headers.raw_items()]
    return b"\r\n".join(lines) + b"\r\n\r\n"


def classify_error(error: BaseException) -> tuple[int, str]:
    """Map the exception that closed a stream to ``(exit code, short description)``."""
    if isinstance(error, ssl.SSLError):
        return EXIT_TLS, "TLS failure"
    if isinstance(error, ConnectionRefusedError):
        return EXIT_REFUSED, "connection refused"
    if isinstance(error, TimeoutError):
        return EXIT_TIMEOUT, "timed out"
    if isinstance(error, OSError):
        return EXIT_ERROR, "network error"
    return EXIT_ERROR, f"error ({type(error).__name__})"


def _resolve(target: Target) -> list[tuple[int, Any]]:
    try:
        infos = socket.getaddrinfo(target.host, target.port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise CLIError(f"cannot resolve {target.host!r}: {exc.strerror or exc}") from None
    except UnicodeError as exc:
        raise CLIError(f"bad URL: bad host name {target.host!r}: {exc}", EXIT_USAGE) from None
    if not infos:
        raise CLIError(f"cannot resolve {target.host!r}: no address")
    seen: list[tuple[int, Any]] = []
    for family, _type, _proto, _canon, sockaddr in infos:
        if (family, sockaddr) not in seen:
            seen.append((family, sockaddr))
    return seen


def _ssl_context(cafile: str | None) -> ssl.SSLContext:
    try:
        return ssl.create_default_context(cafile=cafile)
    except FileNotFoundError:
        raise CLIError(f"--cafile: no such file: {cafile}", EXIT_USAGE) from None
    except (ssl.SSLError, OSError) as exc:
        raise CLIError(f"--cafile: cannot load {cafile}: {exc}", EXIT_USAGE) from None


def _require_h11() -> None:
    """Raise :class:`CLIError` (exit 2) naming the install command if h11 is missing."""
    try:
        import h11  # noqa: F401
    except ImportError:
        raise CLIError(f"get needs the h11 package: {H11_INSTALL}", EXIT_USAGE) from None


def fetch(
    url: str,
    out: BinaryIO,
    *,
    poller: str | None = None,
    cafile: str | None = None,
    timeout: float = 30.0,
    include_headers: bool = False,
    out_name: str = "the output",
) -> tuple[int, str]:
    """Fetch *url* into *out*; return ``(exit code, one-line error)``.

    The message is empty on success. A failure to write *out* (named
    *out_name* in the message) ends the fetch with exit code 1 and a message
    that says it was a local write error.
    """
    from iostream import IOLoop

    try:
        _require_h11()
        target = parse_url(url)
        if timeout <= 0:
            raise CLIError(f"--timeout must be a positive number of seconds, got {timeout:g}", 2)
        if cafile is not None and target.scheme != "https":
            log.info("--cafile is ignored for an http:// URL")
        context = _ssl_context(cafile) if target.scheme == "https" else None
        try:
            io_loop = IOLoop(poller)
        except (ValueError, RuntimeError) as exc:
            raise CLIError(str(exc), EXIT_USAGE) from None
        addresses = _resolve(target)
    except CLIError as exc:
        return exc.code, str(exc)
    get = HTTPGet(io_loop, target, out, context, timeout, include_headers, out_name)
    try:
        result: tuple[int, str] = io_loop.run_sync(lambda: get.run(addresses))
    finally:
        io_loop.close(all_fds=True)
    return result


def cmd_get(args: argparse.Namespace) -> int:
    """``get``: fetch a URL and write its body to stdout."""
    out = sys.stdout.buffer
    code, message = fetch(
        args.url,
        out,
        poller=args.poller,
        cafile=args.cafile,
        timeout=args.timeout,
        include_headers=args.include,
        out_name="standard output",
    )
    if code == EXIT_OK:
        try:
            out.flush()
        except OSError as exc:
            raise _stdout_failed(exc) from None
    elif message.startswith("cannot write to standard output"):
        _silence_stdout()
    if code != EXIT_OK:
        return _fail(message, code)
    return EXIT_OK


# --------------------------------------------- run, doctor, bench: pass-through


def _entry_point(module: str) -> Callable[[list[str]], int]:
    """``module.main(argv) -> int``, imported only when its command runs."""

    def call(argv: list[str]) -> int:
        # Imported here, not at the top: ``info`` and ``get`` do not pay for
        # the asyncio runner, the probes or the benchmark.
        return int(importlib.import_module(module).main(argv) or 0)

    return call


#: Subcommands that parse their own arguments: name -> (one-line help, entry
#: point). The entry points are imported only when their command runs, so
#: ``info`` and ``get`` do not pay for them.
PASSTHROUGH: dict[str, tuple[str, Callable[[list[str]], int]]] = {
    "run": (
        "run an asyncio program (SCRIPT | -m MODULE) on a poller",
        _entry_point("iostream._run"),
    ),
    "doctor": (
        "probe every poller with every fd kind; recommend one",
        _entry_point("iostream._doctor"),
    ),
    "bench": ("run the benchmark suite", _entry_point("iostream.bench")),
}


# --------------------------------------------------------------------- main


def prog_name() -> str:
    """The program's name as it was invoked, for usage lines and ``--help``.

    ``python -m iostream`` (argv[0] is the package's ``__main__.py``) shows
    as ``<interpreter> -m iostream``; the ``iostream`` console script shows
    as its own name.
    """
    argv0 = sys.argv[0] if sys.argv and sys.argv[0] else ""
    base = os.path.basename(argv0)
    if base in ("__main__.py", "-m", "-c", ""):
        return f"{os.path.basename(sys.executable) or 'python'} -m iostream"
    return base


def _exit_code_help() -> str:
    return "\n".join(f"  {code}  {meaning}" for code, meaning in EXIT_CODES.items())


class _Parser(argparse.ArgumentParser):
    """The ArgumentParser of every command: one-line usage errors, visible write failures.

    - A usage error (an unknown option, a missing or bad argument) is one
      line on stderr, ``iostream: error: MESSAGE (see PROG --help)``, and
      exit code 2, as every other failure of the command line is reported;
      not argparse's usage block followed by ``PROG: error: MESSAGE``.
    - argparse ignores an ``OSError`` while printing help, usage or the
      version, so ``--help > /dev/full`` would "succeed" with nothing
      written; here it propagates (:func:`parse_command_args` reports it).
    """

    def _print_message(self, message: str, file: Any = None) -> None:
        if message:
            (file or sys.stderr).write(message)

    def error(self, message: str) -> NoReturn:
        """Print *message* as the one-line ``iostream: error:`` and exit with 2."""
        self.exit(EXIT_USAGE, f"iostream: error: {_one_line(message)} (see {self.prog} --help)\n")


def command_parser(prog: str, description: str, **kwargs: Any) -> argparse.ArgumentParser:
    """A parser for a command that parses its own arguments (``doctor``, ``bench``).

    It reports usage errors as one line and lets a failed ``--help`` write
    be seen, as the parser of ``info`` and ``get`` does; parse with
    :func:`parse_command_args`.
    """
    return _Parser(prog=prog, description=description, **kwargs)


def parse_command_args(
    parser: argparse.ArgumentParser, argv: Sequence[str]
) -> argparse.Namespace | int:
    """Parse *argv*; return the namespace, or the exit code when the command is done.

    The command is done after ``--help`` (0, with the help flushed to
    stdout; a failed write is one line and exit 1) and after a usage error
    (2, its one line already printed). Never raises ``SystemExit``, so that
    a command run as ``python -m iostream.bench`` reports as it does under
    ``python -m iostream``.
    """
    try:
        return parser.parse_args(list(argv))
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else EXIT_USAGE
        if code == EXIT_OK:
            try:
                sys.stdout.flush()
            except OSError as flush_exc:
                return _fail(str(_stdout_failed(flush_exc)), EXIT_ERROR)
        return code
    except OSError as exc:
        return _fail(str(_stdout_failed(exc)), EXIT_ERROR)


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    """The argument parser of the command line (*prog*: the name in usage lines)."""
    prog = prog or prog_name()
    parser = _Parser(
        prog=prog,
        description="iostream: non-blocking socket streams on a pluggable poller.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=(
            f"Each command has its own --help ({prog} COMMAND --help).\n"
            "\n"
            "The poller is chosen by --poller, else by the IOSTREAM_POLLER environment\n"
            "variable (a name or a comma-separated preference list), else the best\n"
            "available one."
        ),
    )
    parser.add_argument("--version", action="version", version=f"iostream {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log what happens on stderr")
    sub = parser.add_subparsers(dest="command", title="commands", metavar="COMMAND")

    info = sub.add_parser(
        "info",
        help="show the chosen poller, why, and the available ones",
        description="Show the poller iostream would use here, why, which pollers are "
        "available, and why the others are not.",
    )
    info.add_argument("--poller", metavar="NAME", help="choose this poller (a name or a list)")
    info.add_argument("--json", action="store_true", help="print the report as JSON")
    info.set_defaults(func=cmd_info)

    get = sub.add_parser(
        "get",
        help="fetch an http:// or https:// URL and print its body",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Fetch URL with IOStream (SSLIOStream for https://) over HTTP/1.1 and "
        "write the body to stdout. Certificates and host names are verified. Redirects "
        "are not followed. Needs h11: " + H11_INSTALL,
        epilog=f"exit codes:\n{_exit_code_help()}",
    )
    get.add_argument("url", metavar="URL", help="an http:// or https:// URL")
    get.add_argument("--poller", metavar="NAME", help="the poller to run on")
    get.add_argument(
        "--cafile",
        metavar="PATH",
        help="trust the CA certificates in this PEM file (instead of the system's)",
    )
    get.add_argument(
        "--timeout",
        metavar="SECONDS",
        type=float,
        default=30.0,
        help="give up when connecting, or waiting for the server, takes longer "
        "than this (default: 30)",
    )
    get.add_argument(
        "-i", "--include", action="store_true", help="also print the status line and headers"
    )
    get.set_defaults(func=cmd_get)

    for name, (help_text, _entry) in PASSTHROUGH.items():
        # Parsed by the command itself (main() hands it the raw arguments);
        # listed here so that --help shows it.
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line with *argv* (default ``sys.argv[1:]``); return the exit code.

    Whatever the command printed is flushed before returning, so that a
    closed or full standard output is reported here, as one line, and not
    by the interpreter at exit with a traceback. ``run`` is the exception:
    the program it runs owns standard output, as under ``python SCRIPT``.
    """
    args_list = list(sys.argv[1:] if argv is None else argv)
    verbose = False
    while args_list and args_list[0] in ("-v", "--verbose"):
        verbose = True
        args_list.pop(0)
    command = args_list[0] if args_list else None
    if command != "run":
        # ``run``'s program owns logging, as under ``python SCRIPT``.
        _setup_logging(verbose)
    elif verbose:
        _setup_logging(True)
    try:
        code = _dispatch(args_list)
        if command != "run":
            try:
                sys.stdout.flush()
            except OSError as exc:
                raise _stdout_failed(exc) from None
        return code
    except CLIError as exc:
        return _fail(str(exc), exc.code)
    except KeyboardInterrupt:
        if command == "run":
            # The program's own: the interpreter reports it as under
            # ``python SCRIPT`` and ends the process by SIGINT.
            raise
        return EXIT_INTERRUPTED


def _dispatch(args_list: list[str]) -> int:
    """Parse *args_list* and run its command; return the exit code."""
    if args_list and args_list[0] in PASSTHROUGH:
        _help, entry = PASSTHROUGH[args_list[0]]
        return entry(args_list[1:])
    parser = build_parser()
    try:
        args = parser.parse_args(args_list)
    except SystemExit as exc:
        # --help, --version and usage errors: argparse has printed and wants
        # to exit; return instead, so that main() flushes and checks stdout.
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    except OSError as exc:
        raise _stdout_failed(exc) from None
    if args.verbose:
        _setup_logging(True)
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    func: Callable[[argparse.Namespace], int] = args.func
    return func(args)


def _setup_logging(verbose: bool) -> None:
    """Quiet by default (errors are reported as one line); ``-v`` logs to stderr."""
    logger = logging.getLogger("iostream")
    if verbose:
        logging.basicConfig(level=logging.DEBUG, format="%(name)s: %(message)s")
    elif not logger.handlers:
        # A NullHandler keeps logging's last-resort stderr output away
        # without cutting the logger off from the root (propagate stays on,
        # so an application or a test that captures logs still sees them).
        logger.addHandler(logging.NullHandler())
