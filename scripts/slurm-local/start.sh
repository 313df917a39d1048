#!/usr/bin/env bash
# Bring up a real single-node SLURM cluster on this machine, for the `pytest -m slurm` tests.
#
#   sudo scripts/slurm-local/start.sh        # Debian 12 (bookworm), as root; no systemd needed
#   pytest -m slurm tests/
#   sudo scripts/slurm-local/stop.sh
#
# What it runs: munged (authentication), MariaDB + slurmdbd (accounting, so `sacct` answers;
# submitit asks sacct about jobs that died without writing a result, and waits forever without it),
# slurmctld (controller) and slurmd (the one compute node, partition `debug`).
#
# Safe to run twice: missing Debian packages are installed with apt-get, the config is rewritten
# only when it changes, and a daemon is started only when it is not already running. The pid of
# every daemon *this script* started is recorded in $EIF_SLURM_RUN_DIR/<daemon>.pid, and stop.sh
# stops exactly those, so daemons somebody else runs are never touched.
#
# Environment:
#   EIF_SLURM_RUN_DIR      where the pid records go (default /run/eif-slurm-local)
#   EIF_SLURM_ACCOUNTING   1 (default) runs MariaDB + slurmdbd; 0 skips them (sacct then fails)
#   EIF_SLURM_PARTITION    partition name (default debug)
set -euo pipefail

RUN_DIR=${EIF_SLURM_RUN_DIR:-/run/eif-slurm-local}
ACCOUNTING=${EIF_SLURM_ACCOUNTING:-1}
PARTITION=${EIF_SLURM_PARTITION:-debug}
CLUSTER=eiflocal
DB_USER=slurm
DB_PASS=eif-local-only   # the database listens on 127.0.0.1 only
SLURM_ETC=/etc/slurm
export DEBIAN_FRONTEND=noninteractive

START=$SECONDS
say() { echo "[slurm-local +$((SECONDS - START))s] $*"; }
fail() { echo "[slurm-local] error: $*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || fail "run me as root (apt-get and the daemons need it)"
mkdir -p "$RUN_DIR"

# is_running PID NAME: PID is a live, non-zombie process whose command name starts with NAME
is_running() {
  local pid=$1 name=$2 comm state
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  comm=$(cat "/proc/$pid/comm" 2>/dev/null) || return 1
  [[ "$comm" == "$name"* ]] || return 1
  state=$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null) || return 1
  [ "$state" != Z ]
}
# pidfile_running FILE NAME: FILE names a running NAME
pidfile_running() { [ -s "$1" ] && is_running "$(cat "$1")" "$2"; }
# retry SECONDS CMD...: run CMD every half second until it succeeds or SECONDS pass
retry() {
  local until=$((SECONDS + $1)); shift
  until "$@" >/dev/null 2>&1; do
    [ "$SECONDS" -lt "$until" ] || return 1
    sleep 0.5
  done
}
# launched NAME PIDFILE: wait for the daemon's own pid file, then remember the pid as ours
launched() {
  retry 30 pidfile_running "$2" "$1" || fail "$1 did not come up (see its log under /var/log)"
  cp "$2" "$RUN_DIR/$1.pid"
  say "$1 started, pid $(cat "$2")"
}

# ---- packages -------------------------------------------------------------------------------------
want=(munge slurm-client slurmctld slurmd)
[ "$ACCOUNTING" = 1 ] && want+=(mariadb-server slurmdbd)
need=()
for pkg in "${want[@]}"; do
  dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null | grep -qx installed || need+=("$pkg")
done
if [ "${#need[@]}" -gt 0 ]; then
  say "installing ${need[*]}"
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# ---- munge ----------------------------------------------------------------------------------------
KEY=/etc/munge/munge.key
if [ ! -s "$KEY" ]; then
  dd if=/dev/urandom of="$KEY" bs=1024 count=1 status=none
fi
chown munge:munge /etc/munge "$KEY"
chmod 0700 /etc/munge
chmod 0400 "$KEY"
install -d -o munge -g munge -m 0755 /run/munge
if pidfile_running /run/munge/munged.pid munged; then
  say "munged is already running; leaving it"
else
  runuser -u munge -- /usr/sbin/munged
  launched munged /run/munge/munged.pid
fi
munge -n | unmunge >/dev/null || fail "munge cannot decode its own credential"

# ---- slurm.conf -----------------------------------------------------------------------------------
NODE=$(hostname -s)
# `slurmd -C` prints this machine's NodeName line: CPUs=... RealMemory=... (MiB)
HW=$(slurmd -C | head -n 1)
CPUS=$(grep -o 'CPUs=[0-9]*' <<<"$HW" | cut -d= -f2)
MEM_MB=$(grep -o 'RealMemory=[0-9]*' <<<"$HW" | cut -d= -f2)
MEM_MB=$((MEM_MB * 9 / 10))   # leave headroom, or slurmd drains the node for "low RealMemory"
install -d -m 0755 "$SLURM_ETC" /run/slurm /var/log/slurm /var/spool/slurmctld /var/spool/slurmd

if [ "$ACCOUNTING" = 1 ]; then
  ACCOUNTING_LINES="AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=6819
JobAcctGatherType=jobacct_gather/linux"
else
  ACCOUNTING_LINES="AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none"
fi

# No cgroups in containers: linuxproc tracks a job's processes by parentage, task/none binds nothing.
# OverSubscribe=FORCE:4 lets up to 4 small test jobs share a core, so concurrency tests run on 2 cores.
CONF="# written by eif scripts/slurm-local/start.sh; rewritten on every start
ClusterName=$CLUSTER
SlurmctldHost=$NODE(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
$ACCOUNTING_LINES
JobCompType=jobcomp/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
JobRequeue=1
ReturnToService=2
MailProg=/bin/true
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurm/slurmctld.pid
SlurmdPidFile=/run/slurm/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
SlurmctldPort=6817
SlurmdPort=6818
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
MinJobAge=600
KillWait=10
Waittime=0
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$MEM_MB State=UNKNOWN
PartitionName=$PARTITION Nodes=$NODE Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:4"
CONF_CHANGED=0
if [ "$(cat "$SLURM_ETC/slurm.conf" 2>/dev/null)" != "$CONF" ]; then
  printf '%s\n' "$CONF" >"$SLURM_ETC/slurm.conf.new"
  mv "$SLURM_ETC/slurm.conf.new" "$SLURM_ETC/slurm.conf"
  CONF_CHANGED=1
  say "wrote $SLURM_ETC/slurm.conf: node $NODE, $CPUS CPUs, $MEM_MB MiB, partition $PARTITION"
fi

# ---- MariaDB and slurmdbd -------------------------------------------------------------------------
if [ "$ACCOUNTING" = 1 ]; then
  SOCK=/run/mysqld/mysqld.sock
  install -d -o mysql -g mysql -m 0755 /run/mysqld
  if [ ! -d /var/lib/mysql/mysql ]; then
    mariadb-install-db --user=mysql --datadir=/var/lib/mysql >/dev/null
  fi
  if pidfile_running /run/mysqld/mysqld.pid mariadbd; then
    say "mariadbd is already running; leaving it"
  else
    # setsid: the server must not die with this shell's session
    setsid /usr/sbin/mariadbd --user=mysql --pid-file=/run/mysqld/mysqld.pid --socket="$SOCK" \
      --bind-address=127.0.0.1 --innodb-lock-wait-timeout=900 \
      </dev/null >>/var/log/slurm/mariadbd.log 2>&1 &
    retry 60 mariadb-admin --socket="$SOCK" ping || fail "MariaDB does not answer (/var/log/slurm/mariadbd.log)"
    launched mariadbd /run/mysqld/mysqld.pid
  fi
  mariadb --socket="$SOCK" <<SQL
CREATE USER IF NOT EXISTS '$DB_USER'@'localhost' IDENTIFIED BY '$DB_PASS';
GRANT ALL PRIVILEGES ON slurm_acct_db.* TO '$DB_USER'@'localhost';
FLUSH PRIVILEGES;
SQL
  umask 077
  cat >"$SLURM_ETC/slurmdbd.conf" <<EOF
# written by eif scripts/slurm-local/start.sh
AuthType=auth/munge
DbdHost=localhost
DbdPort=6819
SlurmUser=root
PidFile=/run/slurm/slurmdbd.pid
LogFile=/var/log/slurm/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=localhost
StoragePort=3306
StorageUser=$DB_USER
StoragePass=$DB_PASS
StorageLoc=slurm_acct_db
EOF
  umask 022
  if pidfile_running /run/slurm/slurmdbd.pid slurmdbd; then
    say "slurmdbd is already running; leaving it"
  else
    slurmdbd
    launched slurmdbd /run/slurm/slurmdbd.pid
  fi
  retry 60 sacctmgr --noheader show cluster || fail "slurmdbd does not answer (/var/log/slurm/slurmdbd.log)"
  if ! sacctmgr --noheader --parsable2 show cluster format=Cluster | grep -qx "$CLUSTER"; then
    sacctmgr --immediate add cluster "$CLUSTER" >/dev/null
    say "cluster $CLUSTER registered with slurmdbd"
  fi
fi

# ---- slurmctld and slurmd -------------------------------------------------------------------------
if pidfile_running /run/slurm/slurmctld.pid slurmctld; then
  say "slurmctld is already running; leaving it"
  if [ "$CONF_CHANGED" = 1 ]; then
    scontrol reconfigure || true
    say "slurm.conf changed: ran scontrol reconfigure (node or accounting changes need stop.sh + start.sh)"
  fi
else
  slurmctld
  launched slurmctld /run/slurm/slurmctld.pid
fi
retry 60 scontrol ping || fail "slurmctld does not answer (/var/log/slurm/slurmctld.log)"
if pidfile_running /run/slurm/slurmd.pid slurmd; then
  say "slurmd is already running; leaving it"
else
  slurmd
  launched slurmd /run/slurm/slurmd.pid
fi

# ---- wait until the node takes jobs ---------------------------------------------------------------
state=unknown
for _ in $(seq 120); do
  state=$(sinfo --noheader --nodes="$NODE" --format=%T 2>/dev/null || true)
  case "$state" in
    idle | mixed | allocated) break ;;
    down* | drain* | fail*) scontrol update NodeName="$NODE" State=RESUME >/dev/null 2>&1 || true ;;
  esac
  sleep 0.5
done
case "$state" in
  idle | mixed | allocated) say "node $NODE is $state; cluster ready" ;;
  *) fail "node $NODE is '$state' (/var/log/slurm/slurmd.log)" ;;
esac
sinfo
