"""Fault-injection fixtures: read-only mounts, a PostgreSQL server we may stop, CLI subprocesses.

Root ignores permission bits, so "read-only" here is a real read-only bind mount made inside a
private mount namespace (``unshare -m``) of the one subprocess that needs it: nothing is left
mounted if a test dies. Tests skip, saying why, where ``unshare``/``mount`` are not permitted or
PostgreSQL is not installed.
"""
from __future__ import annotations

import importlib.util
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"
_STORE_CONFTEST = Path(__file__).resolve().parents[1] / "store" / "conftest.py"


def _store_helpers():
    """The PostgreSQL helpers of tests/store/conftest.py (one home for how a throwaway server starts)."""
    spec = importlib.util.spec_from_file_location("_rs_store_conftest", _STORE_CONFTEST)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def cli_env(**extra: str) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}
    env.pop("ROBUSTSCALE_STORE", None)
    return {**env, **extra}


def run_cli(*args, ro: tuple[Path, ...] = (), env: dict[str, str] | None = None, timeout: float = 120,
            cwd: Path | None = None) -> subprocess.CompletedProcess:
    """``python -m robustscale ARGS`` in a subprocess; the folders in ``ro`` are read-only mounts there."""
    cmd = [sys.executable, "-m", "robustscale", *map(str, args)]
    if ro:
        mounts = " && ".join(f"mount --bind -o ro {shlex.quote(str(p))} {shlex.quote(str(p))}" for p in ro)
        cmd = ["unshare", "-m", "sh", "-c", f"{mounts} && exec {shlex.join(cmd)}"]
    return subprocess.run(cmd, env=env or cli_env(), capture_output=True, text=True, timeout=timeout, cwd=cwd)


_MANY = """
import contextlib, io, json, sys
from robustscale.cli import main
results = []
for argv in json.loads(sys.argv[1]):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as exc:
            code = exc.code
    results.append([code, out.getvalue(), err.getvalue()])
print(json.dumps(results))
"""


def run_cli_many(commands, ro: tuple[Path, ...] = (), timeout: float = 300,
                 env: dict[str, str] | None = None) -> list[tuple[int, str, str]]:
    """Several ``robustscale`` commands in ONE subprocess (one interpreter start: torch imports are slow
    on a busy machine), the folders in ``ro`` read-only there; ``[(exit code, stdout, stderr), ...]``."""
    import json

    argv = json.dumps([[str(a) for a in c] for c in commands])
    cmd = [sys.executable, "-c", _MANY, argv]
    if ro:
        mounts = " && ".join(f"mount --bind -o ro {shlex.quote(str(p))} {shlex.quote(str(p))}" for p in ro)
        cmd = ["unshare", "-m", "sh", "-c", f"{mounts} && exec {shlex.join(cmd)}"]
    r = subprocess.run(cmd, env=env or cli_env(), capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, r.stderr
    return [tuple(x) for x in json.loads(r.stdout.strip().splitlines()[-1])]


@pytest.fixture(name="run_cli_many")
def _run_cli_many_fixture():
    return run_cli_many


@pytest.fixture(name="run_cli")
def _run_cli_fixture():
    """:func:`run_cli`: the CLI in a subprocess, optionally with read-only folders."""
    return run_cli


@pytest.fixture(name="cli_env")
def _cli_env_fixture():
    return cli_env


@pytest.fixture(scope="session")
def ro_mounts():
    """Skip unless a read-only bind mount in a private mount namespace really stops writes here."""
    if shutil.which("unshare") is None or shutil.which("mount") is None:
        pytest.skip("unshare/mount not installed: cannot make a read-only folder as root")
    probe = Path(tempfile.mkdtemp(prefix="rs-ro-probe-"))
    try:
        script = f"mount --bind -o ro {probe} {probe} && touch {probe}/x"
        r = subprocess.run(["unshare", "-m", "sh", "-c", script], capture_output=True, text=True, timeout=30)
        if "Read-only file system" not in r.stderr:
            pytest.skip(f"no read-only bind mount here (unshare -m / mount --bind -o ro: {r.stderr.strip()[:120]})")
    finally:
        shutil.rmtree(probe, ignore_errors=True)
    return True


class PgServer:
    """A throwaway PostgreSQL server that a test may stop and start again (its own, not the session's)."""

    def __init__(self, root: Path, bindir: Path, user: str | None, port: int, helpers):
        self.root, self.bindir, self.user, self.port, self.h = root, bindir, user, port, helpers
        self.data, self.log = root / "data", root / "server.log"
        self.env = {**os.environ, "LC_ALL": "C", "LANG": "C"}
        self.url = f"postgresql://postgres@127.0.0.1:{port}"

    def _ctl(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(self.h._as_user([str(self.bindir / "pg_ctl"), "-D", str(self.data), *args], self.user),
                              capture_output=True, text=True, env=self.env, timeout=90)

    def start(self) -> None:
        opts = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
        r = self._ctl("-o", opts, "-l", str(self.log), "-w", "-t", "60", "start")
        if r.returncode != 0:
            raise RuntimeError(f"pg_ctl start failed: {r.stderr.strip()}")

    def stop(self) -> None:
        r = self._ctl("-m", "fast", "-w", "stop")
        if r.returncode != 0:
            raise RuntimeError(f"pg_ctl stop failed: {r.stderr.strip()}")

    def new_database(self) -> str:
        return self.h.new_pg_database(self.url)


@pytest.fixture
def stoppable_postgres():
    """A fresh PostgreSQL server on a free port, as :class:`PgServer`; removed at the end."""
    import pwd

    h = _store_helpers()
    bindir = h._pg_bindir()
    if bindir is None:
        pytest.skip("PostgreSQL binaries not found (no /usr/lib/postgresql/*/bin/initdb; apt-get install postgresql)")
    pytest.importorskip("psycopg", reason="psycopg (PostgreSQL driver) not installed")
    user = None
    if os.geteuid() == 0:
        user = next((n for n in ("postgres", "nobody") if _has_user(n)), None)
        if user is None or shutil.which("runuser") is None:
            pytest.skip("running as root without a postgres/nobody user or runuser: PostgreSQL cannot start as root")
    root = Path(tempfile.mkdtemp(prefix="rs-pg-faults-"))
    if user:
        pw = pwd.getpwnam(user)
        os.chown(root, pw.pw_uid, pw.pw_gid)
    os.chmod(root, 0o700)
    server = PgServer(root, bindir, user, h._free_port(), h)
    try:
        r = subprocess.run(h._as_user([str(bindir / "initdb"), "-D", str(server.data), "-U", "postgres",
                                       "--auth=trust", "-E", "UTF8", "--no-locale"], user),
                           capture_output=True, text=True, env=server.env, timeout=120)
        if r.returncode != 0:
            pytest.skip(f"initdb failed: {(r.stderr or r.stdout).strip().splitlines()[-1:]}")
        try:
            server.start()
        except RuntimeError as exc:
            pytest.skip(str(exc))
        yield server
    finally:
        if server.data.exists():
            server._ctl("-m", "immediate", "stop")
        shutil.rmtree(root, ignore_errors=True)


def _has_user(name: str) -> bool:
    import pwd

    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False


@pytest.fixture(autouse=True)
def _no_store_from_environment(monkeypatch):
    monkeypatch.delenv("ROBUSTSCALE_STORE", raising=False)
    monkeypatch.delenv("ROBUSTSCALE_SWEEP", raising=False)
