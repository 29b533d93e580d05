#!/usr/bin/env bash
# A real single-node Slurm cluster on loopback, for driftbench's Slurm tests (tests/test_slurm.py)
# and for trying `python launch.py -m hydra/launcher=slurm ...` on one machine.
# Debian 12 / Slurm 22.05, run as root, no systemd needed.
#
#   scripts/slurm_cluster.sh start    install missing packages, configure, start the daemons, smoke-test
#   scripts/slurm_cluster.sh stop     stop every daemon this script started (by the PID in its pid file)
#   scripts/slurm_cluster.sh status   daemon PIDs and sinfo; exit 1 if a daemon is down
#   scripts/slurm_cluster.sh clean    stop, then delete $SLURM_CI_DIR
#
# `start` is idempotent: daemons already running are kept, slurm.conf is rewritten and reloaded.
# Afterwards:  source "$SLURM_CI_DIR/env.sh"   # exports SLURM_CONF for sbatch, sacct and submitit
#
# Knobs (environment variables):
#   SLURM_CI_DIR=/tmp/driftbench_slurm  all state: configs, Slurm state, logs, pid files, munge key,
#                                       MariaDB datadir; nothing is written outside it
#   SLURM_CI_CPUS=8                     CPUs the node advertises; more than the real count lets
#                                       several tiny test jobs run at once (oversubscribed)
#   SLURM_CI_PORT_BASE=16817            slurmctld, slurmd, slurmdbd listen on BASE, BASE+1, BASE+2
#   SLURM_CI_DB_PORT=13306              MariaDB, on 127.0.0.1 only
#   SLURM_CI_INSTALL=1                  apt-get install missing packages (0: fail instead)
# The ports are not Slurm's and MySQL's defaults (6817, 3306), so a real Slurm or database on the
# host is left alone.
#
# Accounting (slurmdbd + MariaDB) is always on: submitit learns a job's state from `sacct`, and
# without it a job that dies before writing its result makes the sweep wait forever.
set -euo pipefail

ACTION=${1:-start}
D=${SLURM_CI_DIR:-/tmp/driftbench_slurm}
CPUS=${SLURM_CI_CPUS:-8}
PORT=${SLURM_CI_PORT_BASE:-16817}
DBPORT=${SLURM_CI_DB_PORT:-13306}
INSTALL=${SLURM_CI_INSTALL:-1}
export SLURM_CONF=$D/etc/slurm.conf
MUNGE_SOCKET=$D/munge/munge.socket
DB_SOCKET=$D/run/mysqld.sock

log() { echo "[slurm_cluster $(date +%T)] $*" >&2; }
die() {
  log "ERROR: $*"
  for f in "$D"/log/*.log "$D"/log/*.out; do
    [ -s "$f" ] && { echo "--- tail of $f" >&2; tail -n 20 "$f" >&2; }
  done
  exit 1
}

# alive NAME PIDFILE: the PID in PIDFILE runs a process called NAME that is not a zombie
# (an exited daemon can linger as a zombie when PID 1 does not reap; it counts as stopped).
alive() {
  local pid
  pid=$(cat "$2" 2>/dev/null) && [ -n "$pid" ] || return 1
  grep -q "^$1" "/proc/$pid/comm" 2>/dev/null || return 1
  [ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" != Z ]
}

# wait_for SECONDS WHAT CMD...: poll CMD every 0.25 s until it succeeds
wait_for() {
  local seconds=$1 what=$2 i
  shift 2
  for ((i = 0; i < seconds * 4; i++)); do
    "$@" >/dev/null 2>&1 && return 0
    sleep 0.25
  done
  die "timeout (${seconds}s) waiting for $what"
}

stop_one() { # NAME PIDFILE: SIGTERM, then SIGKILL after 15 s
  alive "$1" "$2" || { rm -f "$2"; return 0; }
  local pid
  pid=$(cat "$2")
  log "stopping $1 (pid $pid)"
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 60); do
    alive "$1" "$2" || { rm -f "$2"; return 0; }
    sleep 0.25
  done
  log "$1 (pid $pid) ignored SIGTERM; sending SIGKILL"
  kill -9 "$pid" 2>/dev/null || true
  rm -f "$2"
}

do_stop() {
  if alive slurmctld "$D/run/slurmctld.pid"; then
    # cancel jobs first, so no job process outlives slurmd
    scancel --user=root >/dev/null 2>&1 || true
    for _ in $(seq 40); do
      [ -z "$(squeue -h -o %i 2>/dev/null)" ] && break
      sleep 0.25
    done
  fi
  stop_one slurmd "$D/run/slurmd.pid"
  stop_one slurmctld "$D/run/slurmctld.pid"
  stop_one slurmdbd "$D/run/slurmdbd.pid"
  stop_one mariadbd "$D/run/mysqld.pid"
  stop_one munged "$D/munge/munged.pid"
}

do_status() {
  local down=0 entry name pidfile
  for entry in munged:munge/munged.pid mariadbd:run/mysqld.pid slurmdbd:run/slurmdbd.pid \
    slurmctld:run/slurmctld.pid slurmd:run/slurmd.pid; do
    name=${entry%%:*} pidfile=$D/${entry#*:}
    if alive "$name" "$pidfile"; then
      echo "$name: running (pid $(cat "$pidfile"))"
    else
      echo "$name: not running"
      down=1
    fi
  done
  [ "$down" = 0 ] && sinfo
  return "$down"
}

case "$ACTION" in
  start) ;;
  stop) do_stop; exit 0 ;;
  status) do_status; exit $? ;;
  # state and accounting DB go together: wiping only one makes job ids restart and `sacct -j`
  # match old jobs
  clean) do_stop; rm -rf -- "${D:?}"; exit 0 ;;
  *) echo "usage: $0 start|stop|status|clean" >&2; exit 2 ;;
esac

[ "$(id -u)" = 0 ] || die "must run as root (apt-get install, daemons as SlurmUser=root)"

# ------------------------------------------------------------------------------------ packages
pkgs=(slurmctld slurmd slurm-client slurmdbd munge mariadb-server)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  [ "$INSTALL" = 1 ] || die "missing packages (SLURM_CI_INSTALL=0): ${missing[*]}"
  command -v apt-get >/dev/null || die "missing packages and no apt-get: ${missing[*]}"
  log "apt-get install ${missing[*]}"
  apt-get update -qq
  # without systemd the packages' postinst "start the service" steps fail harmlessly
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" \
    >/dev/null
fi

mkdir -p "$D"/{etc,state,spool,log,run,munge}
chmod 755 "$D" "$D/munge" # munged insists that the socket's directory is world-executable

# ------------------------------------------------------------------------------------ configs
# `slurmd -C` prints e.g. "NodeName=vm CPUs=2 ... RealMemory=24105". Advertise 90% of the memory:
# more than slurmd measures marks the node INVALID.
realmem=$(slurmd -C | head -n1 | sed -E 's/.*RealMemory=([0-9]+).*/\1/')
mem=$((realmem * 9 / 10))

cat >"$D/etc/slurm.conf.new" <<EOF
# generated by scripts/slurm_cluster.sh; rewritten on every start
ClusterName=driftbench
# NodeName=localhost, not \`hostname\`: CI machines have odd host names
SlurmctldHost=localhost(127.0.0.1)
SlurmUser=root
SlurmdUser=root
SlurmctldPort=$PORT
SlurmdPort=$((PORT + 1))
# munge on a socket of our own, not /run/munge
AuthType=auth/munge
AuthInfo=socket=$MUNGE_SOCKET
CredType=cred/munge
StateSaveLocation=$D/state
SlurmdSpoolDir=$D/spool
SlurmctldPidFile=$D/run/slurmctld.pid
SlurmdPidFile=$D/run/slurmd.pid
SlurmctldLogFile=$D/log/slurmctld.log
SlurmdLogFile=$D/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
# no cgroups in a container: track processes through /proc, no CPU binding
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
# accounting, so that sacct (and submitit through it) sees FAILED/CANCELLED jobs;
# the slurmctld -> slurmdbd connection takes the munge socket from AccountingStoragePass
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=$((PORT + 2))
AccountingStoragePass=$MUNGE_SOCKET
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=30
JobCompType=jobcomp/none
MpiDefault=none
MailProg=/bin/true
SchedulerType=sched/backfill
ReturnToService=2
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
MinJobAge=300
KillWait=5
Waittime=0
# CPUs=$CPUS may exceed the real count: config_overrides makes slurmd accept it
SlurmdParameters=config_overrides
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
EOF
mv "$D/etc/slurm.conf.new" "$D/etc/slurm.conf"

cat >"$D/etc/slurmdbd.conf" <<EOF
# generated by scripts/slurm_cluster.sh
AuthType=auth/munge
AuthInfo=socket=$MUNGE_SOCKET
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=$((PORT + 2))
SlurmUser=root
LogFile=$D/log/slurmdbd.log
PidFile=$D/run/slurmdbd.pid
DebugLevel=info
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DBPORT
StorageUser=slurm
StoragePass=slurm
StorageLoc=slurm_acct_db
EOF
chmod 600 "$D/etc/slurmdbd.conf" # slurmdbd refuses a world-readable slurmdbd.conf

echo "export SLURM_CONF=$SLURM_CONF" >"$D/env.sh"

# Daemons are started with stdio on a log file: one that inherited the caller's stdout would keep
# a pipe open (pytest's subprocess.run would then wait for it forever).

# ------------------------------------------------------------------------------------ munge
[ -s "$D/munge/munge.key" ] || mungekey --create --keyfile="$D/munge/munge.key" --force
chmod 600 "$D/munge/munge.key"
if ! alive munged "$D/munge/munged.pid"; then
  log "starting munged"
  munged --key-file="$D/munge/munge.key" --socket="$MUNGE_SOCKET" --pid-file="$D/munge/munged.pid" \
    --log-file="$D/log/munged.log" --seed-file="$D/munge/munged.seed" \
    </dev/null >>"$D/log/munged.out" 2>&1 || die "munged did not start"
fi
wait_for 10 munged bash -c "munge -n --socket='$MUNGE_SOCKET' | unmunge --socket='$MUNGE_SOCKET'"

# ------------------------------------------------------------------------------------ MariaDB
if [ ! -d "$D/mysql/mysql" ]; then
  log "initialising the MariaDB datadir"
  mariadb-install-db --no-defaults --datadir="$D/mysql" --user=root \
    --auth-root-authentication-method=normal --skip-test-db \
    >"$D/log/mariadb-install.out" 2>&1 || die "mariadb-install-db failed"
fi
if ! alive mariadbd "$D/run/mysqld.pid"; then
  log "starting mariadbd on 127.0.0.1:$DBPORT"
  setsid mariadbd --no-defaults --datadir="$D/mysql" --socket="$DB_SOCKET" --port="$DBPORT" \
    --bind-address=127.0.0.1 --user=root --pid-file="$D/run/mysqld.pid" \
    --log-error="$D/log/mysqld.log" --innodb-buffer-pool-size=64M \
    </dev/null >>"$D/log/mysqld.out" 2>&1 &
fi
wait_for 30 mariadbd mariadb-admin --no-defaults --socket="$DB_SOCKET" -uroot ping
mariadb --no-defaults --socket="$DB_SOCKET" -uroot -e "
  CREATE DATABASE IF NOT EXISTS slurm_acct_db;
  CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY 'slurm';
  CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY 'slurm';
  GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';
  GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';" || die "creating the slurm DB user failed"

# ------------------------------------------------------------------------------------ Slurm
if ! alive slurmdbd "$D/run/slurmdbd.pid"; then
  log "starting slurmdbd"
  slurmdbd </dev/null >>"$D/log/slurmdbd.out" 2>&1 || die "slurmdbd did not start"
fi
wait_for 30 slurmdbd sacctmgr -n list cluster

if ! alive slurmctld "$D/run/slurmctld.pid"; then
  log "starting slurmctld"
  # -i: start even if the saved state is unreadable (first start, or after a crash)
  slurmctld -i </dev/null >>"$D/log/slurmctld.out" 2>&1 || die "slurmctld did not start"
else
  scontrol reconfigure || true
fi
wait_for 30 slurmctld bash -c "scontrol ping | grep -q 'is UP'"

if ! alive slurmd "$D/run/slurmd.pid"; then
  log "starting slurmd"
  slurmd -N localhost </dev/null >>"$D/log/slurmd.out" 2>&1 || die "slurmd did not start"
fi
# "idle*" means not registered yet; a node left DOWN/DRAINED by an earlier run is resumed
# shellcheck disable=SC2016  # expanded by the inner bash
wait_for 60 "node localhost to be idle" bash -c 'case "$(sinfo -h -n localhost -o %T)" in
  idle|mixed|allocated) exit 0 ;;
  drain*|down*|fail*) scontrol update nodename=localhost state=resume ;;
esac; exit 1'

# ------------------------------------------------------------------------------------ smoke test
# one job through srun, and its COMPLETED state through sacct (proves accounting works)
# shellcheck disable=SC2016  # expanded inside the job
jid=$(timeout 60 srun -N1 -n1 -t 1 -J smoke bash -c 'echo $SLURM_JOB_ID') || die "srun smoke test failed"
[[ "$jid" =~ ^[0-9]+$ ]] || die "unexpected srun output: $jid"
wait_for 30 "sacct to record job $jid" bash -c "sacct -n -X -j $jid -o State | grep -q COMPLETED"
log "Slurm is up: $(sinfo -h -o '%P %a %D %T %N %c CPUs %m MB' | head -n1)"
log "use it with:  source $D/env.sh"
