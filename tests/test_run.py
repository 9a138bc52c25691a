"""``python -m iostream run``, end to end: real subprocesses, compared with plain ``python``."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest

from iostream import pollers

#: Generous: a child that passes finishes in well under a second.
TIMEOUT = 60

#: A program that reports what it sees, as JSON on stdout, then exits with 3.
REPORTER = """\
import asyncio, json, os, sys

async def main():
    loop = asyncio.get_running_loop()
    selector = loop._selector
    return {
        "selector": type(selector).__module__ + "." + type(selector).__name__,
        # None under plain python, whose selectors have no poller.
        "poller": getattr(getattr(selector, "poller", None), "name", None),
        "argv": sys.argv,
        "name": __name__,
        "file": __file__,
        "path0": sys.path[0],
        "main_is_me": sys.modules["__main__"].__dict__ is globals(),
        "env": os.environ.get("IOSTREAM_POLLER"),
    }

print(json.dumps(asyncio.run(main())))
sys.exit(3)
"""

#: A program that fails inside asyncio.run, two frames deep.
FAILING = """\
import asyncio

def helper():
    raise ValueError("boom from the program")

async def main():
    await asyncio.sleep(0)
    helper()

asyncio.run(main())
"""


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != pollers.ENV_VAR}
    env.update(extra)
    return env


def _run(
    args: list[str], cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args],
        cwd=cwd,
        env=_env() if env is None else env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )


def _launch(
    args: list[str], cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return _run(["-m", "iostream", "run", *args], cwd, env)


@pytest.fixture
def reporter(tmp_path: Path) -> Path:
    (tmp_path / "prog").mkdir()
    script = tmp_path / "prog" / "reporter.py"
    script.write_text(REPORTER)
    return script


def test_script_runs_on_the_chosen_poller(poller_name: str, tmp_path: Path, reporter: Path) -> None:
    proc = _launch(["--poller", poller_name, "prog/reporter.py", "a", "--b"], tmp_path)
    assert proc.returncode == 3, proc.stderr
    seen = json.loads(proc.stdout)
    assert seen == {
        "selector": "iostream.asyncio.PollerSelector",
        "poller": poller_name,
        "argv": ["prog/reporter.py", "a", "--b"],
        "name": "__main__",
        "file": str(reporter),
        "path0": str(reporter.parent),
        "main_is_me": True,
        "env": poller_name,
    }
    assert proc.stderr == ""


def test_same_view_as_plain_python(tmp_path: Path, reporter: Path) -> None:
    # Everything but the loop is what `python SCRIPT` shows the program.
    ours = _launch(["prog/reporter.py", "x"], tmp_path)
    plain = _run(["prog/reporter.py", "x"], tmp_path)
    assert ours.returncode == plain.returncode == 3
    ours_seen, plain_seen = json.loads(ours.stdout), json.loads(plain.stdout)
    assert plain_seen["poller"] is None
    for key in ("argv", "name", "file", "path0", "main_is_me"):
        assert ours_seen[key] == plain_seen[key], key


def test_env_var_chooses_and_option_wins(poller_name: str, tmp_path: Path, reporter: Path) -> None:
    proc = _launch(["prog/reporter.py"], tmp_path, _env(IOSTREAM_POLLER=poller_name))
    assert proc.returncode == 3, proc.stderr
    assert json.loads(proc.stdout)["poller"] == poller_name
    others = [name for name in pollers.available() if name != poller_name]
    if not others:
        pytest.skip("only one poller is available here")
    other = others[0]
    proc = _launch(
        ["--poller", poller_name, "prog/reporter.py"], tmp_path, _env(IOSTREAM_POLLER=other)
    )
    assert proc.returncode == 3, proc.stderr
    seen = json.loads(proc.stdout)
    assert seen["poller"] == poller_name
    assert seen["env"] == poller_name


def test_module_mode(tmp_path: Path) -> None:
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("")
    (tmp_path / "pkg" / "reporter.py").write_text(REPORTER)
    proc = _launch(["--poller=select", "-m", "pkg.reporter", "one", "-m", "two"], tmp_path)
    assert proc.returncode == 3, proc.stderr
    seen = json.loads(proc.stdout)
    module_file = str(tmp_path / "pkg" / "reporter.py")
    assert seen["poller"] == "select"
    assert seen["argv"] == [module_file, "one", "-m", "two"]
    assert seen["name"] == "__main__"
    assert seen["file"] == module_file
    assert seen["path0"] == str(tmp_path)


def test_traceback_is_exactly_pythons(tmp_path: Path) -> None:
    script = tmp_path / "failing.py"
    script.write_text(FAILING)
    plain = _run([str(script)], tmp_path)
    ours = _launch([str(script)], tmp_path)
    assert plain.returncode == ours.returncode == 1
    assert ours.stderr.startswith("Traceback (most recent call last):\n")
    assert f'File "{script}", line 10, in <module>' in ours.stderr
    assert "iostream" not in ours.stderr
    assert "runpy" not in ours.stderr
    assert ours.stderr == plain.stderr


def test_syntax_error_is_exactly_pythons(tmp_path: Path) -> None:
    script = tmp_path / "bad.py"
    script.write_text("print('never')\ndef broken(:\n    pass\n")
    plain = _run([str(script)], tmp_path)
    ours = _launch([str(script)], tmp_path)
    assert plain.returncode == ours.returncode == 1
    assert "SyntaxError" in ours.stderr
    assert ours.stdout == ""
    assert ours.stderr == plain.stderr


def test_exit_codes_are_pythons(tmp_path: Path) -> None:
    cases = {
        "import sys; sys.exit()": (0, ""),
        "import sys; sys.exit(7)": (7, ""),
        "import sys; sys.exit('goodbye')": (1, "goodbye\n"),
        "raise SystemExit(None)": (0, ""),
        "pass": (0, ""),
    }
    for i, (source, (code, stderr)) in enumerate(cases.items()):
        script = tmp_path / f"exit{i}.py"
        script.write_text(source + "\n")
        ours = _launch([str(script)], tmp_path)
        assert (ours.returncode, ours.stderr) == (code, stderr), source
        plain = _run([str(script)], tmp_path)
        assert (plain.returncode, plain.stderr) == (code, stderr), source


def test_keyboard_interrupt_prints_the_traceback_and_dies_as_pythons(tmp_path: Path) -> None:
    # Python ends a program that a KeyboardInterrupt ends by SIGINT (on POSIX:
    # returncode -2), so that a shell loop or make around it stops too; an
    # exit(130) would look like a program that chose to fail.
    script = tmp_path / "interrupted.py"
    script.write_text("def stop():\n    raise KeyboardInterrupt\n\nstop()\n")
    plain = _run([str(script)], tmp_path)
    for launcher in (["-m", "iostream", "run"], ["-m", "iostream._run"]):
        ours = _run([*launcher, str(script)], tmp_path)
        assert ours.returncode == plain.returncode, launcher
        assert ours.stderr == plain.stderr, launcher
    if sys.platform != "win32":
        assert plain.returncode == -signal.SIGINT
    assert plain.stderr.rstrip().endswith("KeyboardInterrupt")


@pytest.mark.skipif(sys.platform == "win32", reason="SIGINT is delivered by os.kill on POSIX")
def test_ctrl_c_ends_an_asyncio_program_as_under_python(tmp_path: Path) -> None:
    # A real SIGINT to a program blocked in asyncio.run on iostream's loop:
    # asyncio.Runner's handler cancels the main task through
    # call_soon_threadsafe (so the loop must wake), then re-raises.
    script = tmp_path / "waits.py"
    script.write_text(
        "import asyncio\n"
        "async def main():\n"
        "    print('READY', type(asyncio.get_running_loop()._selector).__module__, flush=True)\n"
        "    await asyncio.sleep(60)\n"
        "asyncio.run(main())\n"
    )
    results = {}
    for name, args in (("plain", [str(script)]), ("ours", ["-m", "iostream", "run", str(script)])):
        proc = subprocess.Popen(
            [sys.executable, *args],
            cwd=tmp_path,
            env=_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert proc.stdout is not None
            ready = proc.stdout.readline()
            assert ready.startswith("READY"), ready
            proc.send_signal(signal.SIGINT)
            _out, err = proc.communicate(timeout=TIMEOUT)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
        results[name] = (ready.split()[1], proc.returncode, err.splitlines()[-1:])
    assert results["plain"][0] == "selectors"
    assert results["ours"][0].startswith("iostream")
    assert results["plain"][1:] == results["ours"][1:] == (-signal.SIGINT, ["KeyboardInterrupt"])


def test_iostream_logging_reaches_stderr_as_under_python(tmp_path: Path) -> None:
    # The command line keeps its own commands quiet with a NullHandler on the
    # "iostream" logger; the program must not inherit it, or an error that
    # iostream logs in the program would vanish.
    script = tmp_path / "logs.py"
    script.write_text('import logging\nlogging.getLogger("iostream.ioloop").error("logged")\n')
    plain = _run([str(script)], tmp_path)
    ours = _launch([str(script)], tmp_path)
    assert plain.stderr == "logged\n"
    assert (ours.returncode, ours.stderr) == (plain.returncode, plain.stderr)


def test_future_imports_do_not_leak_into_the_program(tmp_path: Path) -> None:
    # The launcher's modules use `from __future__ import annotations`; the
    # program must be compiled with its own flags only.
    script = tmp_path / "annotations.py"
    script.write_text("def f(x: int) -> None: pass\nprint(f.__annotations__['x'] is int)\n")
    ours = _launch([str(script)], tmp_path)
    assert (ours.returncode, ours.stdout, ours.stderr) == (0, "True\n", "")


@pytest.mark.parametrize("kind", ["directory", "zipapp"])
def test_directory_or_zipapp_with_main(tmp_path: Path, kind: str) -> None:
    if kind == "directory":
        (tmp_path / "app").mkdir()
        (tmp_path / "app" / "__main__.py").write_text(REPORTER)
    else:
        with zipfile.ZipFile(tmp_path / "app", "w") as archive:
            archive.writestr("__main__.py", REPORTER)
    ours = _launch(["--poller", "select", "app", "z"], tmp_path)
    assert ours.returncode == 3, ours.stderr
    seen = json.loads(ours.stdout)
    assert seen["poller"] == "select"
    plain = json.loads(_run(["app", "z"], tmp_path).stdout)
    for key in ("argv", "name", "file", "path0", "main_is_me"):
        assert seen[key] == plain[key], key
    assert seen["path0"] == str(tmp_path / "app")
    assert seen["argv"] == ["app", "z"]


def test_directory_without_main_is_one_line_and_status_1(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    ours = _launch(["empty"], tmp_path)
    assert ours.returncode == _run(["empty"], tmp_path).returncode == 1
    assert ours.stderr.count("\n") == 1
    assert f"can't find '__main__' module in {str(tmp_path / 'empty')!r}" in ours.stderr


def test_unknown_poller_is_one_line_and_status_2(tmp_path: Path, reporter: Path) -> None:
    proc = _launch(["--poller", "nope", "prog/reporter.py"], tmp_path)
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr.count("\n") == 1
    assert proc.stderr.startswith("iostream: error: ")
    assert "unknown poller 'nope'" in proc.stderr
    proc = _launch(["prog/reporter.py"], tmp_path, _env(IOSTREAM_POLLER="nope"))
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1
    assert "IOSTREAM_POLLER='nope'" in proc.stderr


def test_unavailable_poller_is_one_line_and_status_2(tmp_path: Path, reporter: Path) -> None:
    missing = [name for name in pollers.BACKENDS if name not in pollers.available()]
    if not missing:
        pytest.skip("every poller is available here")
    proc = _launch(["--poller", missing[0], "prog/reporter.py"], tmp_path)
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr.count("\n") == 1
    assert "not available" in proc.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "give the program to run"),
        (["--poller"], "--poller needs a NAME"),
        (["-m"], "-m needs a MODULE"),
        (["--frobnicate", "x.py"], "unknown option '--frobnicate'"),
        (["-"], "standard input"),
        (["does-not-exist.py"], "can't open file"),
    ],
)
def test_usage_errors_are_one_line_and_status_2(
    tmp_path: Path, args: list[str], message: str
) -> None:
    proc = _launch(args, tmp_path)
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr.count("\n") == 1
    assert message in proc.stderr


def test_missing_module_is_one_line_and_status_1(tmp_path: Path) -> None:
    proc = _launch(["-m", "no_such_module_here"], tmp_path)
    assert proc.returncode == 1
    assert proc.stderr.count("\n") == 1
    assert "No module named no_such_module_here" in proc.stderr


def test_import_error_in_the_program_keeps_its_traceback(tmp_path: Path) -> None:
    (tmp_path / "importer.py").write_text("import no_such_module_either\n")
    proc = _launch(["-m", "importer"], tmp_path)
    assert proc.returncode == 1
    assert proc.stderr.startswith("Traceback (most recent call last):\n")
    assert "importer.py" in proc.stderr
    assert "ModuleNotFoundError: No module named 'no_such_module_either'" in proc.stderr


def test_help(tmp_path: Path) -> None:
    proc = _launch(["--help"], tmp_path)
    assert proc.returncode == 0
    assert proc.stdout.startswith("usage: ")
    assert "--poller NAME" in proc.stdout
    assert "-m MODULE" in proc.stdout


def test_underscore_run_module_works_directly(tmp_path: Path, reporter: Path) -> None:
    proc = _run(["-m", "iostream._run", "--poller", "select", "prog/reporter.py"], tmp_path)
    assert proc.returncode == 3, proc.stderr
    assert json.loads(proc.stdout)["poller"] == "select"


def test_open_connection_program(poller_name: str, tmp_path: Path) -> None:
    # A real asyncio program: server and client over loopback.
    script = tmp_path / "echo.py"
    script.write_text(
        textwrap.dedent(
            """\
            import asyncio

            async def handle(reader, writer):
                writer.write(await reader.readline())
                await writer.drain()
                writer.close()

            async def main():
                server = await asyncio.start_server(handle, "127.0.0.1", 0)
                port = server.sockets[0].getsockname()[1]
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                selector = asyncio.get_running_loop()._selector
                writer.write(b"hello over " + type(selector).__name__.encode() + b"\\n")
                print((await reader.readline()).decode().strip())
                writer.close()
                server.close()
                await server.wait_closed()

            asyncio.run(main())
            """
        )
    )
    proc = _launch(["--poller", poller_name, str(script)], tmp_path)
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "hello over PollerSelector\n", "")
