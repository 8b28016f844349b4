#!/usr/bin/env bash
# A single-node Slurm 22.05 on this machine, for benchmarks (the recipe of docs "real parts":
# munge + slurmctld + slurmd as root, no slurmdbd, finished jobs in a jobcomp text file).
#
# Usage: scripts/slurm.sh start [tuned]|stop|status
#   start   installs the Debian packages when missing, writes /etc/slurm/slurm.conf (the node line
#           comes from `slurmd -C`, so it fits the machine) and starts munged, slurmctld and slurmd;
#           does nothing when this Slurm already answers with an idle (or busy) node and the same
#           configuration (a changed one restarts the daemons; saved jobs survive)
#   start tuned   the same with `SchedulerParameters=batch_sched_delay=0`: Slurm's documented knob
#           for high-throughput batch submission (by default it may delay scheduling batch jobs by
#           up to 3 s, which on one node means a scheduling pass every 3 s)
#   stop    stops the three daemons (by their pid files)
#   status  exit 0 when slurmctld answers and the node is up
# Needs root. Finished jobs: `sacct -c` reads /var/log/slurm/jobcomp.txt. Three partitions over the
# one node: `debug` (the default, no time limit), `short` (jobs of at most one minute; a longer
# request pends forever with reason PartitionTimeLimit, which the Slurm backend's tests use) and
# `gpu`. The node declares two GPUs as GRES whose device files are stand-ins (/dev/null and
# /dev/zero; /etc/slurm/gres.conf): Slurm allocates and accounts them like real ones
# (--gpus-per-task, CUDA_VISIBLE_DEVICES, gres/gpu in TRES), so the GPU path of the Slurm backend
# runs on a machine without GPUs. Nothing can compute on them.
set -euo pipefail

conf=/etc/slurm/slurm.conf
gres_conf=/etc/slurm/gres.conf
pidfiles=(/run/slurmd.pid /run/slurmctld.pid /run/munge/munged.pid)

# A pid file's process is alive (and not a zombie: daemons re-parented to PID 1 may not be reaped).
alive() {
  local pid
  pid=$(cat "$1" 2>/dev/null) || return 1
  [ -n "$pid" ] && [ -r "/proc/$pid/stat" ] || return 1
  [ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" != Z ]
}

# slurmctld answers and the node takes jobs.
up() {
  command -v scontrol >/dev/null 2>&1 || return 1
  scontrol ping 2>/dev/null | grep -q 'is UP' || return 1
  sinfo -h -o %T 2>/dev/null | grep -Eqx 'idle|mixed|allocated|completing'
}

install_packages() {
  local pkgs=(slurmctld slurmd slurm-client munge)
  if command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v sbatch >/dev/null \
    && command -v munged >/dev/null; then
    return 0
  fi
  echo "slurm.sh: installing ${pkgs[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y --no-install-recommends "${pkgs[@]}" >/dev/null \
    || { apt-get update >/dev/null && apt-get install -y --no-install-recommends "${pkgs[@]}" >/dev/null; }
}

stop() {
  local f pid i
  for f in "${pidfiles[@]}"; do
    if alive "$f"; then
      pid=$(cat "$f")
      kill "$pid" 2>/dev/null || true
      for i in $(seq 100); do
        alive "$f" || break
        sleep 0.1
      done
      alive "$f" && kill -9 "$pid" 2>/dev/null || true
    fi
  done
}

# The configuration of the recipe; with "tuned", batch jobs are scheduled without delay.
config() {
  local host node
  host=$(hostname -s)
  node=$(slurmd -C | head -1 | sed 's/ UpTime=.*//; s/ *$//')
  cat <<CONF
ClusterName=ci
GresTypes=gpu
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1024
ReturnToService=2
MinJobAge=3600
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/linux
JobCompType=jobcomp/filetxt
JobCompLoc=/var/log/slurm/jobcomp.txt
$node Gres=gpu:2 NodeAddr=127.0.0.1 State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
PartitionName=short Nodes=ALL MaxTime=1 State=UP
PartitionName=gpu Nodes=ALL MaxTime=INFINITE State=UP
CONF
  if [ "${1:-}" = tuned ]; then
    echo "SchedulerParameters=batch_sched_delay=0"
  fi
}

# The node's two stand-in GPU devices.
gres() {
  local host
  host=$(slurmd -C | head -1 | sed 's/^NodeName=\([^ ]*\).*/\1/')
  printf 'NodeName=%s Name=gpu File=/dev/null\nNodeName=%s Name=gpu File=/dev/zero\n' "$host" "$host"
}

start() {
  if [ "$(id -u)" != 0 ]; then
    echo "slurm.sh: needs root" >&2
    exit 1
  fi
  case "${1:-}" in
    "" | tuned) ;;
    *)
      echo "slurm.sh: unknown mode ${1}" >&2
      exit 2
      ;;
  esac
  install_packages
  local wanted
  wanted=$(config "${1:-}")
  if up && [ "$wanted" = "$(cat "$conf" 2>/dev/null)" ] && [ "$(gres)" = "$(cat "$gres_conf" 2>/dev/null)" ]; then
    echo "slurm.sh: already running (${1:-recipe}; $(sinfo -h -o '%N %c CPUs %T'))"
    return 0
  fi
  # Whatever half of it runs (a node down, a daemon gone, an older configuration) is restarted
  # from scratch; saved jobs survive (StateSaveLocation).
  stop
  install -d -o munge -g munge -m 755 /run/munge
  munge -n >/dev/null 2>&1 || runuser -u munge -- /usr/sbin/munged
  mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm
  printf '%s\n' "$wanted" >"$conf"
  gres >"$gres_conf"
  slurmctld
  slurmd
  local i
  for i in $(seq 150); do
    up && break
    sleep 0.1
  done
  if ! up; then
    echo "slurm.sh: Slurm did not come up within 15 s; the last lines of its logs:" >&2
    tail -n 20 /var/log/slurm/slurmctld.log /var/log/slurm/slurmd.log >&2 || true
    exit 1
  fi
  echo "slurm.sh: started (${1:-recipe}; $(sinfo -h -o '%N %c CPUs %T'))"
}

case "${1:-}" in
  start) start "${2:-}" ;;
  stop) stop ;;
  status) up ;;
  *)
    echo "usage: $0 start [tuned]|stop|status" >&2
    exit 2
    ;;
esac
