#!/usr/bin/env bash
# Stop the single-node Slurm cluster started by scripts/slurm_start.sh, by the daemons' pid files.
#
# Idempotent: a daemon that is not running is skipped.
#
#   bash scripts/slurm_stop.sh
set -uo pipefail

stop() {  # stop NAME PIDFILE: SIGTERM, then wait up to 10 s, then SIGKILL
  local name=$1 pidfile=$2 pid
  [ -s "$pidfile" ] || return 0
  pid=$(cat "$pidfile")
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid"
    for _ in $(seq 1 50); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.2
    done
    if kill -0 "$pid" 2>/dev/null; then
      kill -KILL "$pid"
    fi
    echo "slurm_stop.sh: stopped $name (pid $pid)"
  fi
  rm -f "$pidfile"
}

# Compute daemon first (it may still report to the controller), then controller, then munge.
stop slurmd /run/slurm/slurmd.pid
stop slurmctld /run/slurm/slurmctld.pid
stop munged /run/munge/munged.pid
exit 0
