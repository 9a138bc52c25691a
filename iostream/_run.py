"""``python -m iostream run``: an unmodified asyncio program on a chosen poller.

``python -m iostream run [--poller NAME] (SCRIPT | -m MODULE) [ARGS...]``
installs :class:`iostream.asyncio.EventLoopPolicy` for the poller
(``--poller``, else ``IOSTREAM_POLLER``, else the best here), so that
``asyncio.run``, ``asyncio.Runner`` and ``asyncio.new_event_loop`` make their
loops on it, then runs the program as ``python SCRIPT`` / ``python -m
MODULE`` would:

- ``sys.argv`` is ``[SCRIPT, *ARGS]`` (``-m``: the module's file, then ARGS);
  ``sys.path[0]`` is the script's directory (``-m``: the current directory),
  not iostream's; the program runs as the module ``__main__``, with an
  absolute ``__file__``, and stays ``sys.modules["__main__"]``;
- its exit status is the interpreter's: ``sys.exit(n)`` gives n, an uncaught
  exception 1, with the traceback Python prints, starting at the program's
  own first frame (the launcher's frames are left out, and so are runpy's
  and importlib's before the program's first line: a SyntaxError prints as
  for ``python SCRIPT``); a directory or zip file runs its ``__main__.py``
  with the same ``sys.path[0]``, ``__file__`` and ``__spec__`` as in Python;
- ``--poller NAME`` also sets ``IOSTREAM_POLLER=NAME`` in the environment,
  so iostream's own ``IOLoop`` in the program, and programs it starts with
  this launcher, use the same poller.

A ``KeyboardInterrupt`` that ends the program is left to the interpreter, as
under ``python SCRIPT``: it prints the traceback and then ends the process
by SIGINT (not ``exit(130)``), so that the shell or the parent process sees
an interrupted program and stops too (a shell loop around it, ``make``).

Differences from ``python SCRIPT``, all small: a script that
cannot be opened, or a module that cannot be found, is reported in one line
starting with ``iostream: error:``, as every command's failures are
(status 2 and 1, as Python's). A
``SCRIPT`` of ``-`` (the program on standard input) is not supported. Usage
errors and an unknown or unavailable poller: one line on stderr, status 2.

:func:`main` takes the arguments after ``run``; ``python -m iostream._run``
runs it directly.
"""

from __future__ import annotations

import asyncio
import builtins
import importlib.abc
import importlib.machinery
import importlib.util
import io
import os
import runpy
import sys
import textwrap
import types
import warnings
import zipfile
import zipimport
from dataclasses import dataclass, field
from typing import cast

from iostream import pollers
from iostream.asyncio import EventLoopPolicy

__all__ = ["main"]

#: Exit status for a usage error or a poller that cannot be used.
EXIT_USAGE = 2

_HELP = """\
usage: {prog} [--poller NAME] (SCRIPT | -m MODULE) [ARGS...]

Run an asyncio program, unmodified, on one of iostream's pollers:
asyncio.run(), asyncio.Runner and asyncio.new_event_loop() make their loops
on it. Everything else is as with `python SCRIPT` or `python -m MODULE`:
sys.argv, __main__, the exit status and tracebacks.

arguments:
  SCRIPT [ARGS...]     the program file (or a directory or zip file with a
                       __main__.py), and its arguments
  -m MODULE [ARGS...]  run library module MODULE as a script

options:
{poller_help}
  -h, --help           show this help and exit
"""


class _UsageError(Exception):
    """A bad command line: reported in one line, exit status 2."""


@dataclass
class _Command:
    """What the command line asks for."""

    poller: str | None = None
    script: str | None = None
    module: str | None = None
    args: list[str] = field(default_factory=list)
    help: bool = False


def _prog() -> str:
    """This command's name as invoked, for messages."""
    base = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    python = os.path.basename(sys.executable) or "python"
    if base == "__main__.py":
        return f"{python} -m iostream run"
    if base == "_run.py":
        return f"{python} -m iostream._run"
    return f"{base or 'iostream'} run"


def _parse(argv: list[str]) -> _Command:
    """Options up to SCRIPT or ``-m MODULE``; everything after is the program's."""
    command = _Command()
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg in ("-h", "--help"):
            command.help = True
            return command
        if arg == "--poller":
            if i + 1 >= len(argv):
                raise _UsageError("--poller needs a NAME")
            command.poller = argv[i + 1]
            i += 2
        elif arg.startswith("--poller="):
            command.poller = arg.partition("=")[2]
            i += 1
        elif arg == "-m" or (arg.startswith("-m") and not arg.startswith("--")):
            # python accepts "-m MODULE" and "-mMODULE"; so do we.
            if arg == "-m":
                if i + 1 >= len(argv):
                    raise _UsageError("-m needs a MODULE")
                command.module, rest = argv[i + 1], argv[i + 2 :]
            else:
                command.module, rest = arg[2:], argv[i + 1 :]
            command.args = list(rest)
            return command
        elif arg == "--":
            i += 1
            break
        elif arg == "-":
            raise _UsageError("reading the program from standard input ('-') is not supported")
        elif arg.startswith("-"):
            raise _UsageError(f"unknown option {arg!r} (see --help)")
        else:
            break
    if i >= len(argv):
        raise _UsageError("give the program to run: SCRIPT or -m MODULE (see --help)")
    command.script = argv[i]
    command.args = list(argv[i + 1 :])
    return command


def _help_text(prog: str) -> str:
    available = pollers.available()
    poller_help = textwrap.fill(
        f"the poller: {', '.join(pollers.BACKENDS)}; a comma-separated list means "
        f"the first available. Default: ${pollers.ENV_VAR} if set, else the best "
        f"here ({available[0]}). Available here: {', '.join(available)}.",
        width=78,
        initial_indent="  --poller NAME        ",
        subsequent_indent=" " * 23,
    )
    return _HELP.format(prog=prog, poller_help=poller_help)


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _error(message: str) -> None:
    """One line on stderr, as every ``python -m iostream`` command reports a failure."""
    sys.stderr.write(f"iostream: error: {_one_line(message)}\n")


def main(argv: list[str]) -> int:
    """Run ``[--poller NAME] (SCRIPT | -m MODULE) [ARGS...]``; return the exit status.

    The program's own ``SystemExit`` propagates (the interpreter turns it
    into the exit status, as for ``python SCRIPT``), and so does any other
    exception it raises, to be printed by ``sys.excepthook``, which this
    installs to leave the launcher's frames out of the traceback. Meant to
    be the last thing a process does: the program becomes ``__main__``.
    """
    prog = _prog()
    try:
        command = _parse(list(argv))
        if command.help:
            sys.stdout.write(_help_text(prog))
            return 0
        try:
            # --poller wins over IOSTREAM_POLLER; choose() reads the latter.
            chosen = pollers.choose(command.poller).name
        except (ValueError, pollers.PollerUnavailable) as exc:
            raise _UsageError(str(exc)) from None
    except _UsageError as exc:
        _error(str(exc))
        return EXIT_USAGE
    if command.poller is not None:
        os.environ[pollers.ENV_VAR] = command.poller
    if command.script is not None and not os.path.exists(command.script):
        _error(
            f"can't open file {os.path.abspath(command.script)!r}: "
            "[Errno 2] No such file or directory"
        )
        return EXIT_USAGE
    _install_policy(chosen)
    _install_excepthook()
    _release_logging()
    try:
        # A KeyboardInterrupt passes through: the interpreter prints it (with
        # the hook above) and then kills the process with SIGINT, as it does
        # for `python SCRIPT`, when it reaches the top uncaught.
        _execute(command)
    except ImportError as exc:
        if _program_traceback(exc.__traceback__) is not None:
            raise  # raised by the program itself: its traceback is printed
        # runpy could not find or run the module (or the directory has no
        # __main__.py): one line, status 1, as python -m says it.
        _error(str(exc))
        return 1
    return 0


def _release_logging() -> None:
    """Leave logging as ``python SCRIPT`` has it: no handler of the command line's.

    The command line puts a NullHandler on the ``iostream`` logger to keep
    its own commands quiet; in the program it would silence what iostream
    logs (an exception in a callback, say), which logging's last resort
    prints to stderr under ``python SCRIPT``. With ``-v`` it installs
    stderr logging instead, which is what was asked for, and stays.
    """
    logging_module = sys.modules.get("logging")
    if logging_module is None:
        return
    logger = logging_module.getLogger("iostream")
    for handler in list(logger.handlers):
        if type(handler) is logging_module.NullHandler:
            logger.removeHandler(handler)


def _install_policy(poller: str) -> None:
    """Make asyncio's loops PollerSelector loops on *poller*."""
    with warnings.catch_warnings():
        # Python 3.14 deprecates the policy functions (removal planned for
        # 3.16); until then they are how an unmodified program is reached.
        warnings.simplefilter("ignore", DeprecationWarning)
        asyncio.set_event_loop_policy(EventLoopPolicy(poller))


def _execute(command: _Command) -> None:
    """Run the program as ``python SCRIPT`` / ``python -m MODULE`` would.

    This function's frame marks where the program's traceback starts: see
    :func:`_program_traceback`.
    """
    # sys.path[0] is iostream's (the current directory for `python -m
    # iostream`, the scripts directory for the console script); Python puts
    # the script's directory there (-m: the current directory), unless -P /
    # PYTHONSAFEPATH (3.11+) said to put nothing.
    replace_path0 = bool(sys.path) and not getattr(sys.flags, "safe_path", False)
    if command.module is not None:
        if replace_path0:
            sys.path[0] = os.getcwd()
        sys.argv = ["-m", *command.args]  # runpy sets argv[0] to the module's file
        runpy.run_module(command.module, run_name="__main__", alter_sys=True)
        return
    assert command.script is not None
    sys.argv = [command.script, *command.args]
    if os.path.isfile(command.script) and not zipfile.is_zipfile(command.script):
        if replace_path0:
            sys.path[0] = os.path.dirname(os.path.realpath(command.script))
        _run_file(os.path.abspath(command.script))
    else:
        # A directory or a zip file (a zipapp): Python puts it first on
        # sys.path and runs the __main__ module it holds.
        entry = os.path.abspath(command.script)
        if replace_path0:
            sys.path[0] = entry
        else:
            sys.path.insert(0, entry)
        _run_entry(entry)


def _run_file(path: str) -> None:
    """Execute the script at absolute *path* as the module ``__main__``."""
    with io.open_code(path) as file:
        source = file.read()
    # dont_inherit: this module's `from __future__ import annotations` must
    # not leak into the program.
    code = compile(source, path, "exec", dont_inherit=True)
    module = types.ModuleType("__main__")
    module.__file__ = path
    module.__loader__ = importlib.machinery.SourceFileLoader("__main__", path)
    module.__dict__["__builtins__"] = builtins
    module.__dict__["__cached__"] = None
    sys.modules["__main__"] = module
    exec(code, module.__dict__)


def _run_entry(entry: str) -> None:
    """Run the ``__main__`` module in directory or zip file *entry* as ``__main__``."""
    # Only *entry* is searched: a __main__ elsewhere on sys.path must not run.
    spec = importlib.machinery.PathFinder.find_spec("__main__", [entry])
    if spec is None or spec.loader is None:
        raise ImportError(f"can't find '__main__' module in {entry!r}")
    loader = cast("importlib.abc.InspectLoader", spec.loader)
    code = loader.get_code("__main__")
    if code is None:
        raise ImportError(f"can't find '__main__' module in {entry!r}")
    module = importlib.util.module_from_spec(spec)
    module.__dict__["__builtins__"] = builtins
    sys.modules["__main__"] = module
    exec(code, module.__dict__)


#: Files whose frames sit between _execute and the program's first frame:
#: this module's, runpy's (-m), importlib's and zipimport's (loading a
#: __main__.py, where a SyntaxError in it is raised).
_PLUMBING = frozenset(
    {
        _run_file.__code__.co_filename,
        runpy.run_module.__code__.co_filename,
        importlib.machinery.SourceFileLoader.get_code.__code__.co_filename,
        importlib.machinery.ModuleSpec.__init__.__code__.co_filename,
        zipimport.zipimporter.get_code.__code__.co_filename,
    }
)


def _program_traceback(tb: types.TracebackType | None) -> types.TracebackType | None:
    """*tb* from the program's first frame on.

    If *tb* does not pass through :func:`_execute` (an exception that is not
    the program's), it is returned whole. None means the exception was
    raised before the program ran a line (a SyntaxError in it, a module
    runpy cannot find): Python then prints no "Traceback" header either.
    """
    entry = tb
    while entry is not None and entry.tb_frame.f_code is not _execute.__code__:
        entry = entry.tb_next
    if entry is None:
        return tb
    entry = entry.tb_next
    while entry is not None and entry.tb_frame.f_code.co_filename in _PLUMBING:
        entry = entry.tb_next
    return entry


def _install_excepthook() -> None:
    """Wrap ``sys.excepthook`` so that the program's tracebacks start at its own frames."""
    previous = sys.excepthook
    if getattr(previous, "_iostream_run", False):
        return

    def excepthook(
        exc_type: type[BaseException],
        exc: BaseException,
        tb: types.TracebackType | None,
    ) -> None:
        tb = _program_traceback(tb)
        if isinstance(exc, BaseException):
            # The default hook prints exc.__traceback__ when it is set.
            exc.__traceback__ = tb
        previous(exc_type, exc, tb)

    excepthook._iostream_run = True  # type: ignore[attr-defined]
    sys.excepthook = excepthook


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
