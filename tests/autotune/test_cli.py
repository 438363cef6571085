"""The ``autotune`` CLI: ``studies list|show|best|delete`` through click's runner and as a real
subprocess, embedded (``--db``) and against a server (``--server``); errors are one line."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from click.testing import CliRunner

import autotune
from autotune.cli import cli
from autotune.client import Client


@pytest.fixture
def db(sqlite_url: str, unique_name: str) -> str:
    """A database with one finished single-objective study and one two-objective study."""
    with Client(db=sqlite_url) as c:
        s = c.create_study(
            unique_name,
            {"lr": autotune.Float(1e-3, 0.3, log=True), "kind": autotune.Categorical(["a", "b"])},
            {"loss": "minimize"},
            max_trials=10,
            seed=1,
        )
        for v in (0.5, 0.125, 0.75):
            [t] = s.suggest()
            s.observe(t, {"loss": v})
        s.suggest()  # one left running
        mo = c.create_study(
            unique_name + "_mo", {"x": autotune.Float(0, 1)}, {"a": "minimize", "b": "maximize"}
        )
        for a, b in ((1, 1), (2, 3), (3, 2)):
            [t] = mo.suggest()
            mo.observe(t, {"a": a, "b": b})
    return sqlite_url


def run(*args: str, input: str | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args), input=input, prog_name="autotune")
    assert "Traceback" not in result.output
    return result.exit_code, result.stdout, result.stderr


def test_list(db: str, unique_name: str) -> None:
    code, out, _ = run("studies", "list", "--db", db)
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == [
        "NAME",
        "STATE",
        "OBJECTIVES",
        "TRIALS",
        "MAX",
        "ALGORITHM",
        "CREATED",
    ]
    assert set(lines[1]) == {"-", " "}
    row = next(line for line in lines if line.startswith(unique_name + " "))
    assert "active" in row and "loss (minimize)" in row
    # columns line up: every row starts its STATE column where the header does
    state_col = lines[0].index("STATE")
    assert all(line[state_col - 2 : state_col] == "  " for line in lines[2:])

    code, out, _ = run("studies", "list", "--db", db, "--state", "paused")
    assert (code, out.strip()) == (0, "no studies")


def test_show(db: str, unique_name: str) -> None:
    code, out, _ = run("studies", "show", unique_name, "--db", db)
    assert code == 0, out
    assert unique_name in out and "loss (minimize)" in out
    assert "lr" in out and "[0.001, 0.3] log" in out and '{"a", "b"}' in out
    counts = dict(
        line.split() for line in out.splitlines() if line.startswith(("completed ", "running "))
    )
    assert counts == {"completed": "3", "running": "1"}


def test_best(db: str, unique_name: str) -> None:
    code, out, _ = run("studies", "best", unique_name, "--db", db)
    assert code == 0
    header, _, row = out.splitlines()
    assert header.split()[:2] == ["TRIAL", "LOSS"]
    assert row.split()[:2] == ["1", "0.125"]

    code, out, _ = run("studies", "best", unique_name + "_mo", "--db", db)
    assert code == 0
    # a minimized, b maximized: (2, 3) dominates (3, 2); the Pareto set is (1, 1) and (2, 3)
    assert sorted(line.split()[:3] for line in out.splitlines()[2:]) == [
        ["0", "1", "1"],
        ["1", "2", "3"],
    ]
    code, out, _ = run("studies", "best", unique_name, "--db", db, "--json")
    assert code == 0 and '"number": 1' in out


def test_delete_asks_unless_yes(db: str, unique_name: str) -> None:
    code, _, err = run("studies", "delete", unique_name, "--db", db, input="n\n")
    assert code == 1
    assert run("studies", "show", unique_name, "--db", db)[0] == 0
    code, out, _ = run("studies", "delete", unique_name, "--db", db, "--yes")
    assert code == 0 and "deleted" in out
    code, _, err = run("studies", "show", unique_name, "--db", db)
    assert code == 1
    assert err.strip().splitlines() == [
        f"error: not_found: no study named {unique_name!r}; list the studies to see their names"
    ]


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (["studies", "show", "no_such_study"], 1),
        (["studies", "best", "no_such_study"], 1),
        (["studies", "delete", "no_such_study", "--yes"], 1),
        (["studies", "list", "--state", "sleeping"], 2),
        (["studies", "frobnicate"], 2),
        (["studies", "show"], 2),
        (["serve", "--port", "99999"], 2),
    ],
)
def test_bad_input_exits_without_traceback(db: str, args: list[str], code: int) -> None:
    if args[0] == "studies":
        args = [*args, "--db", db] if args[1] in ("show", "best", "delete", "list") else args
    exit_code, out, err = run(*args)
    assert exit_code == code
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines and lines[-1].lower().startswith("error: ")  # a usage hint at most above it
    assert len(lines) <= 3


def test_db_and_server_options(db: str, unique_name: str) -> None:
    code, _, err = run("studies", "list", "--db", db, "--server", "http://127.0.0.1:1")
    assert code == 2 and "not both" in err
    code, _, err = run("studies", "list", "--server", "ftp://x")
    assert code == 2
    code, _, err = run("studies", "list", "--db", "autotune.db")
    assert code == 2 and "sqlite:///" in err
    code, _, err = run("studies", "list", "--server", "http://127.0.0.1:1")
    assert code == 1 and err.startswith("error: unavailable:") and len(err.splitlines()) == 1


def _subprocess(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "autotune.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
    )


def test_subprocess_against_server(server_url: str, unique_name: str) -> None:
    with Client(server_url) as c:
        s = c.create_study(unique_name, {"x": autotune.Float(0, 1)}, {"loss": "minimize"})
        [t] = s.suggest()
        s.observe(t, {"loss": 0.25})
    p = _subprocess("studies", "list", "--server", server_url)
    assert p.returncode == 0 and unique_name in p.stdout, p.stderr
    p = _subprocess("studies", "best", unique_name, env={"AUTOTUNE_SERVER": server_url})
    assert p.returncode == 0 and "0.25" in p.stdout, p.stderr
    p = _subprocess("studies", "show", "no_such_study", "--server", server_url)
    assert p.returncode == 1
    [line] = p.stderr.strip().splitlines()
    assert line.startswith("error: not_found: no study named 'no_such_study'")
    p = _subprocess("studies", "delete", unique_name, "--server", server_url, "--yes")
    assert p.returncode == 0, p.stderr


def test_serve_with_a_bad_database_is_one_line() -> None:
    for workers in ("1", "2"):
        p = _subprocess("serve", "--db", "nonsense", "--workers", workers, "--port", "1")
        assert p.returncode == 1
        [line] = p.stderr.strip().splitlines()
        assert line.startswith("error: invalid_argument:") and "nonsense" in line


def test_subprocess_embedded_errors(db: str, unique_name: str) -> None:
    p = _subprocess("studies", "show", unique_name, env={"AUTOTUNE_DB": db})
    assert p.returncode == 0 and unique_name in p.stdout
    p = _subprocess("studies", "best", "no_such_study", "--db", db)
    assert p.returncode == 1 and "Traceback" not in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1
    p = _subprocess("studies", "list", "--db", "postgresql+psycopg://nobody@127.0.0.1:1/none")
    assert p.returncode == 1 and "Traceback" not in p.stderr, p.stderr
    assert len(p.stderr.strip().splitlines()) == 1
