#!/usr/bin/env bash
# A one-node Slurm cluster on localhost, for the Slurm executor's tests and CI.
#
#   scripts/slurm-local.sh start    # munge + slurmctld + slurmd; waits until the node is idle
#   scripts/slurm-local.sh status   # prints the node state (exit 1 when not up)
#   scripts/slurm-local.sh stop     # stops what `start` started (by the PIDs in its pid files)
#
# Needs root and Debian's slurm-wlm + munge (apt-get install slurm-wlm munge). Exit codes:
# 0 ok, 3 cannot run here (the reason is printed on stderr). State, spool and logs live in
# $SLURM_LOCAL_DIR (default /tmp/slurm); /etc/slurm/slurm.conf is written (an existing file not
# written by this script is kept as slurm.conf.orig).
set -uo pipefail

DIR=${SLURM_LOCAL_DIR:-/tmp/slurm}
CONF=/etc/slurm/slurm.conf
MARK="# written by robustscale scripts/slurm-local.sh"

fail() { echo "slurm-local: $*" >&2; exit 3; }

# sinfo retries for seconds when no controller answers; an answering one replies in milliseconds.
node_state() { timeout 3 sinfo -h -N -o %T 2>/dev/null | head -n1; }

start_munge() {
    if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then return 0; fi
    [ -f /etc/munge/munge.key ] || { command -v mungekey >/dev/null && mungekey -c -f >/dev/null 2>&1; } \
        || fail "no /etc/munge/munge.key and mungekey could not create one"
    mkdir -p /run/munge /var/log/munge /var/lib/munge
    chown munge:munge /run/munge /var/log/munge /var/lib/munge /etc/munge/munge.key 2>/dev/null
    chmod 0400 /etc/munge/munge.key
    su -s /bin/sh munge -c /usr/sbin/munged </dev/null >/dev/null 2>&1 || fail "munged did not start"
    touch "$DIR/munged.started-by-us"
    for _ in $(seq 20); do
        munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && return 0
        sleep 0.25
    done
    fail "munge does not authenticate (munge -n | unmunge failed)"
}

write_conf() {
    local host cpus mem
    host=$(hostname -s)
    cpus=$(nproc)
    mem=$(( $(awk '/MemTotal/ {print int($2/1024)}' /proc/meminfo) - 2000 ))
    [ "$mem" -gt 500 ] || mem=500
    mkdir -p /etc/slurm "$DIR"/{state,spool,log}
    if [ -f "$CONF" ] && ! grep -q "$MARK" "$CONF"; then cp "$CONF" "$CONF.orig"; fi
    cat > "$CONF" <<EOF
$MARK
ClusterName=local
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
SlurmdTimeout=60
KillWait=10
NodeName=$host CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
}

alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

case "${1:-}" in
start)
    [ "$(id -u)" = 0 ] || fail "needs root (slurmd runs jobs as their users)"
    for b in slurmctld slurmd munged sinfo sbatch; do
        command -v "$b" >/dev/null 2>&1 || [ -x "/usr/sbin/$b" ] || fail "$b not installed (apt-get install slurm-wlm munge)"
    done
    state=""
    if pidof slurmctld >/dev/null 2>&1; then state=$(node_state); fi
    if [ "$state" = idle ] || [ "$state" = mixed ] || [ "$state" = allocated ]; then
        echo "slurm-local: already up (node $state)"; exit 0
    fi
    mkdir -p "$DIR"
    start_munge
    write_conf
    # A fresh cluster: no jobs or node states recovered from an earlier start (-c, empty spool).
    alive "$DIR/slurmd.pid" || rm -rf "${DIR:?}/spool"/*
    # Daemons get no stdio of ours: a caller capturing our output must not wait on their pipes.
    alive "$DIR/slurmctld.pid" || /usr/sbin/slurmctld -c </dev/null >/dev/null 2>&1 \
        || fail "slurmctld did not start (see $DIR/log/slurmctld.log)"
    alive "$DIR/slurmd.pid" || /usr/sbin/slurmd </dev/null >/dev/null 2>&1 \
        || fail "slurmd did not start (see $DIR/log/slurmd.log)"
    for _ in $(seq 60); do
        state=$(node_state)
        case "$state" in
            idle|mixed|allocated) echo "slurm-local: up (node $(hostname -s) $state, $(nproc) CPUs)"; exit 0 ;;
            down*|drain*) scontrol update nodename="$(hostname -s)" state=resume >/dev/null 2>&1 ;;
        esac
        sleep 0.5
    done
    tail -n 5 "$DIR/log/slurmd.log" >&2 2>/dev/null
    fail "node not idle after 30 s (state: ${state:-none}); logs in $DIR/log"
    ;;
stop)
    # Let finishing jobs complete (their steps hang if slurmd goes away first); cancel stragglers.
    for _ in $(seq 60); do
        [ -z "$(squeue -h -o %i 2>/dev/null)" ] && break
        sleep 0.5
    done
    if [ -n "$(squeue -h -o %i 2>/dev/null)" ]; then
        # shellcheck disable=SC2046  (one argument per job id)
        scancel --full $(squeue -h -o %i) >/dev/null 2>&1 || true
        for _ in $(seq 20); do [ -z "$(squeue -h -o %i 2>/dev/null)" ] && break; sleep 0.5; done
    fi
    for d in slurmd slurmctld; do
        if alive "$DIR/$d.pid"; then kill "$(cat "$DIR/$d.pid")" 2>/dev/null; fi
    done
    for _ in $(seq 20); do
        alive "$DIR/slurmd.pid" || alive "$DIR/slurmctld.pid" || break
        sleep 0.25
    done
    if [ -f "$DIR/munged.started-by-us" ] && [ -f /run/munge/munged.pid ]; then
        kill "$(cat /run/munge/munged.pid)" 2>/dev/null
        rm -f "$DIR/munged.started-by-us"
    fi
    echo "slurm-local: stopped"
    ;;
status)
    state=$(node_state)
    [ -n "$state" ] || { echo "slurm-local: not up"; exit 1; }
    echo "slurm-local: node $state"
    ;;
*)
    echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
