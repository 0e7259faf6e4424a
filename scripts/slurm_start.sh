#!/usr/bin/env bash
# Start a single-node Slurm cluster on localhost (munged, slurmctld, slurmd) for the sweep tests.
#
# Idempotent: daemons already running (by their pid files) are left alone, so calling it twice is
# harmless. There is no systemd here, so the daemons are started directly; no cgroups either
# (proctrack/linuxproc, task/none). Without slurmdbd there is no `sacct`: devvis notices a job that
# ended without results by watching the queue (see devvis/sweep.py), so no database is needed.
# Stop everything with scripts/slurm_stop.sh.
#
#   bash scripts/slurm_start.sh && sinfo
set -euo pipefail

if [ "$(id -u)" -ne 0 ]; then
  echo "slurm_start.sh: must run as root (it installs packages and starts daemons)" >&2
  exit 1
fi

if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v sinfo >/dev/null \
   || ! command -v munged >/dev/null; then
  echo "slurm_start.sh: installing slurmctld slurmd slurm-client munge"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    slurmctld slurmd slurm-client munge >/dev/null
fi

CONF=/etc/slurm/slurm.conf
RUN=/run/slurm
mkdir -p /etc/slurm "$RUN" /var/spool/slurmctld /var/spool/slurmd /var/log/slurm
install -d -o munge -g munge -m 0755 /run/munge
install -d -o munge -g munge -m 0700 /var/lib/munge /var/log/munge

alive() {  # alive PIDFILE: the process named in the pid file is running
  [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null
}

if [ ! -s /etc/munge/munge.key ]; then
  dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key status=none
  chown munge:munge /etc/munge/munge.key
  chmod 0400 /etc/munge/munge.key
fi

# slurm.conf is (re)written only while the controller is down, so a running cluster is never
# changed under its feet.
if ! alive "$RUN/slurmctld.pid"; then
  CPUS=$(nproc)
  # RealMemory may not exceed what slurmd detects, or the node is drained: take 90% of MemTotal.
  MEM_MB=$(awk '/MemTotal/ {printf "%d", $2 / 1024 * 0.9}' /proc/meminfo)
  cat >"$CONF" <<EOF
# Written by devvis scripts/slurm_start.sh: one node on localhost for tests.
ClusterName=devvis
SlurmctldHost=localhost(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
KillWait=5
MinJobAge=600
MaxArraySize=10001
SlurmctldPidFile=$RUN/slurmctld.pid
SlurmdPidFile=$RUN/slurmd.pid
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$MEM_MB State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
EOF
fi

if ! alive /run/munge/munged.pid; then
  runuser -u munge -- /usr/sbin/munged --force
fi
if ! alive "$RUN/slurmctld.pid"; then
  # -c: start from a clean state; jobs of an earlier (stopped) cluster are not resurrected.
  /usr/sbin/slurmctld -c
fi
if ! alive "$RUN/slurmd.pid"; then
  /usr/sbin/slurmd -N localhost
fi

# Wait until the node accepts jobs (idle, mixed or allocated all mean "up").
for _ in $(seq 1 60); do
  state=$(sinfo -h -N -n localhost -o %T 2>/dev/null || true)
  case "$state" in
    idle*|mix*|alloc*) echo "slurm_start.sh: cluster up (node localhost: $state, $(nproc) CPUs)"; exit 0 ;;
    down*|drain*) scontrol update NodeName=localhost State=RESUME >/dev/null 2>&1 || true ;;
  esac
  sleep 0.5
done
echo "slurm_start.sh: the node did not come up; state: ${state:-none}. Logs:" >&2
tail -n 20 /var/log/slurm/slurmctld.log /var/log/slurm/slurmd.log >&2 || true
exit 1
