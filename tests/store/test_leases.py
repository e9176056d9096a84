"""Slots of a pool in the store: a cap shared by processes, one slot per run, a dead holder's slot reclaimed."""
from __future__ import annotations

import socket
import subprocess
import sys

from robustscale.store import open_store
from robustscale.store.liveness import utcnow
from robustscale.store.tables import leases


def test_slots_cap_busy_release_and_reclaim(tmp_path):
    st = open_store(tmp_path / "runs.db")
    assert [st.take_slot("p", 2, r) for r in ("a", "b", "c")] == ["go", "go", "full"]
    st.release_slot("p", "a")
    assert st.take_slot("p", 2, "b") == "busy"  # b holds a slot: nobody else starts it
    assert st.take_slot("p", 2, "c") == "go"
    assert sorted(r["run"] for r in st.held_slots("p")) == ["b", "c"]
    assert st.take_slot("other", 1, "a") == "go"  # pools are apart
    # A slot whose sweep and job processes have exited (this host) is free again.
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)
    st.release_slot("p")
    st._run(lambda conn: conn.execute(leases.insert().values(
        pool="p", slot=0, run="z", host=socket.gethostname(), pid=pid, job_pid=pid,
        heartbeat_at=utcnow())))
    assert [r["run"] for r in st.held_slots("p")] == []
    assert [st.take_slot("p", 1, "y")] == ["go"]
    st.release_slot("p")
    assert st.held_slots("p") == []
