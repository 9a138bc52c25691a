"""The CI plumbing checks itself: the GitHub workflow, .ci/run, tox.ini, README.

- ``.github/workflows/ci.yml`` is valid against check-jsonschema's built-in
  GitHub workflow schema;
- its test matrix, once ``exclude``/``include`` are applied, runs every
  supported Python on every OS with exactly the pollers that OS has (the
  table :data:`POLLERS_BY_OS`), and each job sets ``IOSTREAM_POLLER``;
- every script the workflow calls exists;
- the README's test command is the one ``.ci/run`` runs, and tox.ini
  defines an env for every Python x poller pair.
"""

from __future__ import annotations

import configparser
import itertools
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
WORKFLOW = ROOT / ".github" / "workflows" / "ci.yml"

#: Which pollers exist on each OS the workflow runs on (docs/guarantees.md:
#: poll is not offered on macOS, where it is unreliable; Windows has only select).
POLLERS_BY_OS: dict[str, frozenset[str]] = {
    "linux": frozenset({"epoll", "poll", "select"}),
    "darwin": frozenset({"kqueue", "select"}),
    "windows": frozenset({"select"}),
}

#: check-jsonschema with its vendored GitHub workflow schema (no network).
SCHEMA_CHECK = [
    sys.executable,
    "-m",
    "check_jsonschema",
    "--builtin-schema",
    "vendor.github-workflows",
]

#: The CPython versions the project supports (pyproject: requires-python >= 3.10).
PYTHONS = frozenset({"3.10", "3.11", "3.12", "3.13"})


def _os_of(runner: str) -> str:
    """The OS of a GitHub runner label such as ``ubuntu-latest`` or ``macos-14``."""
    label = runner.lower()
    for prefix, os_name in (("ubuntu", "linux"), ("macos", "darwin"), ("windows", "windows")):
        if label.startswith(prefix):
            return os_name
    raise AssertionError(f"unknown runner label {runner!r}")


def _load_yaml(path: Path) -> Any:
    """Parse YAML 1.2 (``on:`` stays a string key) with ruamel.yaml, which
    check-jsonschema brings along."""
    yaml = pytest.importorskip("ruamel.yaml")
    return yaml.YAML(typ="safe", pure=True).load(path.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def workflow() -> dict[str, Any]:
    """The parsed workflow."""
    data = _load_yaml(WORKFLOW)
    assert isinstance(data, dict)
    return data


def expand_matrix(matrix: dict[str, Any]) -> list[dict[str, Any]]:
    """Expand a GitHub ``strategy.matrix`` as Actions does (for the keys used here).

    The cartesian product of the list-valued keys, minus every combination
    that matches an ``exclude`` entry on all its keys, plus each ``include``
    entry that does not extend an existing combination.
    """
    keys = [k for k in matrix if k not in ("include", "exclude")]
    combos = [
        dict(zip(keys, values, strict=True))
        for values in itertools.product(*(matrix[k] for k in keys))
    ]
    for excluded in matrix.get("exclude", []) or []:
        combos = [c for c in combos if not all(c.get(k) == v for k, v in excluded.items())]
    for included in matrix.get("include", []) or []:
        base_keys = [k for k in included if k in keys]
        matched = False
        for combo in combos:
            if all(combo.get(k) == included[k] for k in base_keys):
                combo.update({k: v for k, v in included.items() if k not in keys})
                matched = True
        if not matched:
            combos.append(dict(included))
    return combos


def test_workflow_matches_github_schema() -> None:
    """check-jsonschema's vendored GitHub workflow schema accepts ci.yml."""
    pytest.importorskip("check_jsonschema")
    result = subprocess.run(
        [*SCHEMA_CHECK, str(WORKFLOW)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_schema_check_rejects_a_broken_workflow(tmp_path: Path) -> None:
    """The schema check can fail: a job without ``runs-on`` is refused."""
    pytest.importorskip("check_jsonschema")
    broken = tmp_path / "broken.yml"
    broken.write_text(
        "name: x\non: push\njobs:\n  t:\n    steps:\n      - run: echo hi\n", encoding="utf-8"
    )
    result = subprocess.run(
        [*SCHEMA_CHECK, str(broken)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode != 0


def _test_job(workflow: dict[str, Any]) -> dict[str, Any]:
    jobs = workflow["jobs"]
    with_matrix = [j for j in jobs.values() if "poller" in j.get("strategy", {}).get("matrix", {})]
    assert len(with_matrix) == 1, "expected one job with a poller matrix"
    job: dict[str, Any] = with_matrix[0]
    return job


def test_matrix_pairs_exist_on_their_os(workflow: dict[str, Any]) -> None:
    """Every OS x poller job uses a poller that OS has."""
    combos = expand_matrix(_test_job(workflow)["strategy"]["matrix"])
    assert combos
    for combo in combos:
        os_name = _os_of(combo["os"])
        assert combo["poller"] in POLLERS_BY_OS[os_name], (
            f"{combo['os']} has no {combo['poller']} poller"
        )


def test_matrix_covers_every_os_python_and_poller(workflow: dict[str, Any]) -> None:
    """Each OS runs every supported Python with each of its pollers, once."""
    combos = expand_matrix(_test_job(workflow)["strategy"]["matrix"])
    seen = [(_os_of(c["os"]), str(c["python"]), c["poller"]) for c in combos]
    assert len(seen) == len(set(seen)), "duplicate jobs in the matrix"
    expected = {
        (os_name, python, poller)
        for os_name, pollers in POLLERS_BY_OS.items()
        for python in PYTHONS
        for poller in pollers
    }
    assert set(seen) == expected


def test_matrix_job_selects_the_poller(workflow: dict[str, Any]) -> None:
    """The test job puts the matrix poller in IOSTREAM_POLLER and passes it on."""
    job = _test_job(workflow)
    env = dict(job.get("env", {}))
    for step in job["steps"]:
        env.update(step.get("env", {}))
    assert env.get("IOSTREAM_POLLER") == "${{ matrix.poller }}"
    assert job["runs-on"] == "${{ matrix.os }}"
    uses = [s["uses"] for s in job["steps"] if "uses" in s]
    assert "actions/checkout@v4" in uses
    assert "actions/setup-python@v5" in uses
    setup = next(s for s in job["steps"] if s.get("uses") == "actions/setup-python@v5")
    assert setup["with"]["python-version"] == "${{ matrix.python }}"


def _called_scripts(workflow: dict[str, Any]) -> list[str]:
    scripts: list[str] = []
    for job in workflow["jobs"].values():
        for step in job.get("steps", []):
            run = step.get("run")
            if not run:
                continue
            for line in str(run).splitlines():
                for word in shlex.split(line, posix=True):
                    if re.match(r"^(\./)?(ci|\.ci)/", word):
                        scripts.append(word.removeprefix("./"))
    return scripts


def test_every_called_script_exists(workflow: dict[str, Any]) -> None:
    """Each ``ci/...`` script named in a ``run:`` step is in the repository."""
    scripts = _called_scripts(workflow)
    assert scripts, "the workflow calls no script under ci/"
    for script in scripts:
        assert (ROOT / script).is_file(), f"the workflow calls {script}, which does not exist"


def test_workflow_has_a_lint_job(workflow: dict[str, Any]) -> None:
    """Some job runs the lint/type script."""
    assert any(s.endswith("lint.py") for s in _called_scripts(workflow))


def test_expand_matrix_semantics() -> None:
    """The matrix expansion used above follows the Actions rules."""
    matrix = {
        "os": ["a", "b"],
        "p": [1, 2],
        "exclude": [{"os": "b", "p": 2}],
        "include": [{"os": "a", "p": 1, "extra": True}, {"os": "c", "p": 9}],
    }
    assert expand_matrix(matrix) == [
        {"os": "a", "p": 1, "extra": True},
        {"os": "a", "p": 2},
        {"os": "b", "p": 1},
        {"os": "c", "p": 9},
    ]


# ------------------------------------------------------- .ci/run and README


def _readme_test_command() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    match = re.search(r"<!-- TEST-COMMAND -->\s*```[a-z]*\n(.+?)\n```", text, re.S)
    assert match, "README.md has no <!-- TEST-COMMAND --> code block"
    return match.group(1).strip()


def test_ci_run_runs_the_readme_test_command() -> None:
    """.ci/run runs exactly the test command the README shows."""
    script = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    match = re.search(r'^README_TEST_COMMAND="(.+)"$', script, re.M)
    assert match, ".ci/run has no README_TEST_COMMAND"
    assert match.group(1) == _readme_test_command()
    assert "set -euo pipefail" in script
    assert "exit 5" in script or "-eq 5" in script, ".ci/run must treat pytest exit 5 as failure"


def test_readme_quick_start_main_job() -> None:
    """The README's main-job command is the quick benchmark."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "python -m iostream bench --quick" in text
    assert "<!-- BENCH-TABLE -->" in text


# ----------------------------------------------------------------- tox.ini


def test_tox_has_every_python_poller_env() -> None:
    """tox.ini lists py310..py313 x every poller, plus lint and type, and sets
    IOSTREAM_POLLER from the poller factor."""
    ini = configparser.ConfigParser(interpolation=None)
    ini.read(ROOT / "tox.ini", encoding="utf-8")
    env_list = ini["tox"]["env_list"]
    for factor in ("{epoll,poll,select}", "{kqueue,devpoll}"):
        assert f"py{{310,311,312,313}}-{factor}" in env_list
    assert "lint" in env_list and "type" in env_list
    set_env = ini["testenv"]["set_env"]
    for poller in ("epoll", "kqueue", "devpoll", "poll", "select"):
        assert f"{poller}: IOSTREAM_POLLER = {poller}" in set_env
    assert ini["tox"]["skip_missing_interpreters"] == "true"


def test_tox_tests_the_installed_wheel() -> None:
    """tox builds a wheel, installs it, and runs isolated from the checkout."""
    ini = configparser.ConfigParser(interpolation=None)
    ini.read(ROOT / "tox.ini", encoding="utf-8")
    env = ini["testenv"]
    assert env["package"] == "wheel"
    assert "IOSTREAM_EXPECT_INSTALLED = 1" in env["set_env"]
    commands = [line.strip() for line in env["commands"].strip().splitlines()]
    # -I: the current directory (the checkout) is not on sys.path.
    assert commands and all(line.startswith("python -I ") for line in commands)
    assert "docs" in ini["tox"]["env_list"]
    assert "sphinx -W" in ini["testenv:docs"]["commands"]


@pytest.mark.skipif(
    not os.environ.get("IOSTREAM_EXPECT_INSTALLED"),
    reason="only where the run promises an installed copy (tox sets IOSTREAM_EXPECT_INSTALLED)",
)
def test_the_installed_copy_is_under_test() -> None:
    """Under tox, ``import iostream`` finds the installed wheel, never the checkout."""
    import iostream

    package = Path(iostream.__file__).resolve()
    assert package.parent != ROOT / "iostream", f"tests imported the checkout: {package}"
    assert "site-packages" in package.parts, package


def test_ci_run_builds_the_docs_with_warnings_as_errors() -> None:
    """.ci/run installs the docs extra and builds the site with sphinx -W."""
    script = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert re.search(r"pip install .*-e '\.\[[a-z,]*docs[a-z,]*\]'", script)
    assert re.search(r"^step \"docs[^\n]*python -m sphinx -W [^\n]*-b html docs ", script, re.M)
