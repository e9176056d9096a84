"""Store fixtures: a SQLite file per test, and a real throwaway PostgreSQL server per session.

The PostgreSQL server is made with the machine's own ``initdb`` / ``pg_ctl`` (Debian puts them in
``/usr/lib/postgresql/<version>/bin``) in a temporary folder, listening on a free localhost port.
PostgreSQL refuses to run as root, so as root the binaries run as the ``postgres`` user (or
``nobody``) through ``runuser``. Tests skip, saying why, where the binaries are missing or the
server does not start.
"""
from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from pathlib import Path

import pytest


def _pg_bindir() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _as_user(cmd: list[str], user: str | None) -> list[str]:
    return ["runuser", "-u", user, "--"] + cmd if user else cmd


@pytest.fixture(scope="session")
def postgres_server():
    """``postgresql://postgres@127.0.0.1:PORT`` of a fresh server (no database part), stopped at the end."""
    bindir = _pg_bindir()
    if bindir is None:
        pytest.skip("PostgreSQL binaries not found (no /usr/lib/postgresql/*/bin/initdb; apt-get install postgresql)")
    try:
        import psycopg  # noqa: F401
    except ImportError:
        pytest.skip("psycopg (PostgreSQL driver) not installed")
    user = None
    if os.geteuid() == 0:
        for name in ("postgres", "nobody"):
            try:
                pwd.getpwnam(name)
                user = name
                break
            except KeyError:
                continue
        if user is None or shutil.which("runuser") is None:
            pytest.skip("running as root without a postgres/nobody user or runuser: PostgreSQL cannot start as root")
    root = Path(tempfile.mkdtemp(prefix="rs-pg-"))
    if user:
        pw = pwd.getpwnam(user)
        os.chown(root, pw.pw_uid, pw.pw_gid)
    os.chmod(root, 0o700)
    data, log = root / "data", root / "server.log"
    port = _free_port()
    env = {**os.environ, "LC_ALL": "C", "LANG": "C"}
    try:
        r = subprocess.run(_as_user([str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust",
                                     "-E", "UTF8", "--no-locale"], user),
                           capture_output=True, text=True, env=env, timeout=120)
        if r.returncode != 0:
            pytest.skip(f"initdb failed: {(r.stderr or r.stdout).strip().splitlines()[-1:]}")
        opts = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=100"
        r = subprocess.run(_as_user([str(bindir / "pg_ctl"), "-D", str(data), "-o", opts, "-l", str(log), "-w",
                                     "-t", "60", "start"], user), capture_output=True, text=True, env=env, timeout=90)
        if r.returncode != 0:
            tail = log.read_text().strip().splitlines()[-1:] if log.exists() else r.stderr
            pytest.skip(f"pg_ctl start failed: {tail}")
        yield f"postgresql://postgres@127.0.0.1:{port}"
    finally:
        if data.exists():
            subprocess.run(_as_user([str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"], user),
                           capture_output=True, env=env, timeout=60)
        shutil.rmtree(root, ignore_errors=True)


def new_pg_database(server: str) -> str:
    """Create an empty database on ``server``; its URL."""
    import psycopg

    name = f"rs_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(f"{server}/postgres", autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return f"{server}/{name}"


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request, tmp_path):
    """An empty store: a SQLite file, or a fresh database on the throwaway PostgreSQL server."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'runs.db'}"
    server = request.getfixturevalue("postgres_server")
    return new_pg_database(server)


@pytest.fixture(autouse=True)
def _no_store_from_environment(monkeypatch):
    monkeypatch.delenv("ROBUSTSCALE_STORE", raising=False)
