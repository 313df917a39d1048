#!/usr/bin/env bash
# Stop the local SLURM cluster that start.sh brought up: only the daemons start.sh started itself,
# found by the pids it recorded in $EIF_SLURM_RUN_DIR/<daemon>.pid (default /run/eif-slurm-local).
# A pid is signalled only while it still belongs to a process of the expected name, so a recycled
# pid is never hit. Jobs still in the queue are cancelled first, so no job step outlives slurmd.
# Installed packages, configs and the accounting database are kept (the next start takes seconds).
set -uo pipefail

RUN_DIR=${EIF_SLURM_RUN_DIR:-/run/eif-slurm-local}

is_running() {  # is_running PID NAME (same test as start.sh)
  local pid=$1 name=$2 comm state
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  comm=$(cat "/proc/$pid/comm" 2>/dev/null) || return 1
  [[ "$comm" == "$name"* ]] || return 1
  state=$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null) || return 1
  [ "$state" != Z ]
}

ours() {  # ours NAME: prints the recorded pid of NAME when it is still that daemon
  local f="$RUN_DIR/$1.pid" pid
  [ -s "$f" ] || return 1
  pid=$(cat "$f")
  is_running "$pid" "$1" && echo "$pid"
}

stop() {  # stop NAME: SIGTERM, wait up to 20 s, then SIGKILL
  local name=$1 pid
  if [ ! -e "$RUN_DIR/$name.pid" ]; then
    echo "$name: not started by start.sh; left alone"
    return
  fi
  if pid=$(ours "$name"); then
    kill -TERM "$pid"
    for _ in $(seq 100); do is_running "$pid" "$name" || break; sleep 0.2; done
    if is_running "$pid" "$name"; then
      kill -KILL "$pid"
      echo "$name: pid $pid ignored SIGTERM for 20 s; sent SIGKILL"
    fi
    echo "$name: stopped pid $pid"
  else
    echo "$name: recorded pid has already exited"
  fi
  rm -f "$RUN_DIR/$name.pid"
}

if ours slurmctld >/dev/null; then
  jobs=$(squeue --noheader --format=%A 2>/dev/null | tr '\n' ' ')
  if [ -n "${jobs// /}" ]; then
    echo "cancelling jobs still queued or running: $jobs"
    # shellcheck disable=SC2086  # one argument per job id
    scancel $jobs
    for _ in $(seq 60); do
      [ -z "$(squeue --noheader --format=%A 2>/dev/null)" ] && break
      sleep 0.5
    done
  fi
fi

# Reverse start order: compute node, controller, accounting, database, authentication.
for daemon in slurmd slurmctld slurmdbd mariadbd munged; do
  stop "$daemon"
done
