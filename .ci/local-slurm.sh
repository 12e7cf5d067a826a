#!/usr/bin/env bash
# A real one-node SLURM cluster on this Debian (bookworm) machine, for CI: as root, no systemd.
#
#   .ci/local-slurm.sh start    # install missing Debian packages, (re)start every daemon
#   .ci/local-slurm.sh stop     # stop exactly the daemons whose PIDs `start` recorded
#   .ci/local-slurm.sh status   # show the recorded daemons and the node
#
# `start` first runs `stop`, wipes SLURM's job state (and the accounting database), so it is
# re-runnable and job ids start at 1 every time. It overwrites /etc/slurm/slurm.conf (and
# slurmdbd.conf): only for throw-away CI machines.
#
# Environment:
#   SLURM_ACCOUNTING  1 (default): also MariaDB + slurmdbd, so that `sacct` works (the status
#                     command snakemake-executor-plugin-slurm uses by default; without working
#                     sacct the plugin waits forever). Cluster, account and user: ci / ci / root.
#                     0: no accounting (then run Snakemake with --slurm-status-command squeue).
#   NODE_CPUS, NODE_MEM_MB  fake a node bigger than the machine (default: its real hardware)
#   RUNDIR            PID files and daemon logs (default /tmp/local-slurm)
#   READY_TIMEOUT     seconds to wait for each daemon (default 60)
#
# The node's partition is `debug` (the default one). Findings behind every line:
# /work/shared/notes/slurm-local.md (not part of the repository).
set -euo pipefail

RUNDIR=${RUNDIR:-/tmp/local-slurm}
ACCT=${SLURM_ACCOUNTING:-1}
READY_TIMEOUT=${READY_TIMEOUT:-60}
CLUSTER=ci
PARTITION=debug
# daemons in start order; `stop` goes in reverse. Each name is also its process name (comm).
DAEMONS=(munged mariadbd slurmdbd slurmctld slurmd)

log() { echo "[local-slurm $(date +%T)] $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# Each daemon logs to $RUNDIR/<name>.log; its own stdout/stderr go to <name>.out (for slurm*
# a copy of the log, but the only trace of a failure before the log file is opened).
dump_logs() {
  local name f
  for name in "${DAEMONS[@]}"; do
    f="$RUNDIR/$name.log"
    [ -s "$f" ] || f="$RUNDIR/$name.out"
    [ -s "$f" ] || continue
    echo "----- $f (last 40 lines) -----" >&2
    tail -n 40 "$f" >&2 || true
  done
}

# wait_for <description> <command...>: poll every 0.5 s until the command succeeds.
wait_for() {
  local what=$1; shift
  local deadline=$(( $(date +%s) + READY_TIMEOUT ))
  until "$@" >/dev/null 2>&1; do
    if [ "$(date +%s)" -ge "$deadline" ]; then
      log "timed out after ${READY_TIMEOUT}s waiting for: $what"
      dump_logs
      return 1
    fi
    sleep 0.5
  done
  log "ready: $what"
}

# start_bg <name> <output file> <command...>: a daemon in foreground mode, in the background,
# detached from our stdout/stderr (a CI runner reading a pipe would otherwise wait for EOF),
# PID recorded.
start_bg() {
  local name=$1 out=$2; shift 2
  "$@" </dev/null >>"$out" 2>&1 &
  echo $! >"$RUNDIR/$name.pid"
  log "started $name (pid $!)"
}

# recorded_pid <name>: the PID in $RUNDIR/<name>.pid if that process is alive and still is <name>.
recorded_pid() {
  local f="$RUNDIR/$1.pid" pid
  [ -f "$f" ] || return 1
  pid=$(cat "$f")
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$1" ] || return 1   # gone, or PID reused
  echo "$pid"
}

# Jobs still queued or running (a failed or timed-out test): cancel them while slurmd is up,
# so that no job step outlives the cluster.
cancel_jobs() {
  recorded_pid slurmctld >/dev/null || return 0
  local jobs
  jobs=$(squeue -h -o %i 2>/dev/null) || return 0
  [ -n "$jobs" ] || return 0
  log "cancelling SLURM jobs still queued or running: $(echo $jobs)"
  # shellcheck disable=SC2086
  scancel $jobs || true
  for _ in $(seq 1 60); do [ -z "$(squeue -h -o %i 2>/dev/null)" ] && break; sleep 0.5; done
}

stop() {
  local i name pid
  cancel_jobs
  for (( i=${#DAEMONS[@]}-1; i>=0; i-- )); do
    name=${DAEMONS[i]}
    if pid=$(recorded_pid "$name"); then
      kill "$pid" 2>/dev/null || true
      for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
      if kill -0 "$pid" 2>/dev/null; then
        log "$name (pid $pid) ignored SIGTERM for 10 s, sending SIGKILL"
        kill -9 "$pid" 2>/dev/null || true
      fi
      log "stopped $name (pid $pid)"
    fi
    rm -f "$RUNDIR/$name.pid"
  done
}

status() {
  local name pid
  for name in "${DAEMONS[@]}"; do
    if pid=$(recorded_pid "$name"); then echo "$name: running (pid $pid)"; else echo "$name: not running"; fi
  done
  sinfo 2>&1 || true
}

install_packages() {
  local pkgs=(slurmctld slurmd slurm-client munge)
  [ "$ACCT" = 1 ] && pkgs+=(slurmdbd mariadb-server)
  dpkg -s "${pkgs[@]}" >/dev/null 2>&1 && return 0
  log "installing: ${pkgs[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # Without systemd, invoke-rc.d would start munge/mariadb/slurm* from /etc/init.d during
  # postinst; a policy-rc.d that exits 101 prevents it (we start the daemons ourselves).
  local made_policy=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod +x /usr/sbin/policy-rc.d
    made_policy=1
  fi
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null
  [ "$made_policy" = 1 ] && rm -f /usr/sbin/policy-rc.d
  return 0
}

write_slurm_conf() {
  local host=$1 nodeline extra="" acct_lines
  if [ -n "${NODE_CPUS:-}${NODE_MEM_MB:-}" ]; then
    local cpus=${NODE_CPUS:-$(nproc)}
    local mem=${NODE_MEM_MB:-$(slurmd -C | sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p')}
    nodeline="NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem State=UNKNOWN"
    extra="SlurmdParameters=config_overrides"   # lets the node be 'bigger' than the machine
  else
    # the exact hardware description, so that slurmd never drains the node
    nodeline="$(slurmd -C | head -n1) NodeAddr=127.0.0.1 State=UNKNOWN"
  fi
  acct_lines="AccountingStorageType=accounting_storage/none"
  if [ "$ACCT" = 1 ]; then
    acct_lines="AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort=6819"
  fi
  # EnforcePartLimits=ALL: a job bigger than the node fails at sbatch (else PENDING forever).
  # MinJobAge=300: finished jobs stay visible to squeue (the plugin relies on it).
  # AccountingStoreFlags=job_comment: sacct shows the plugin's rule_<name>_wildcards_... comments.
  cat >/etc/slurm/slurm.conf <<CONF
ClusterName=$CLUSTER
SlurmctldHost=$host(127.0.0.1)
AuthType=auth/munge
CredType=cred/munge
SlurmUser=root
SlurmdUser=root
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=$RUNDIR/slurmctld.log
SlurmdLogFile=$RUNDIR/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
MpiDefault=none
MailProg=/bin/true
ReturnToService=2
MinJobAge=300
EnforcePartLimits=ALL
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
AccountingStoreFlags=job_comment
$acct_lines
$extra
$nodeline
PartitionName=$PARTITION Nodes=$host Default=YES MaxTime=INFINITE State=UP
CONF
}

start_accounting() {
  install -d -o mysql -g root -m 0755 /run/mysqld
  start_bg mariadbd "$RUNDIR/mariadbd.log" /usr/sbin/mariadbd --user=mysql --bind-address=127.0.0.1
  wait_for "mariadb" mariadb-admin ping
  # root connects through the unix socket; a fresh accounting database at every start
  mariadb -e "DROP DATABASE IF EXISTS slurm_acct_db; CREATE DATABASE slurm_acct_db;
    CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY 'slurmpw';
    GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost'; FLUSH PRIVILEGES;"
  cat >/etc/slurm/slurmdbd.conf <<CONF
AuthType=auth/munge
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=6819
SlurmUser=root
PidFile=/run/slurmdbd.pid
LogFile=$RUNDIR/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=slurm
StoragePass=slurmpw
StorageLoc=slurm_acct_db
CONF
  chmod 0600 /etc/slurm/slurmdbd.conf    # slurmdbd refuses a world-readable one
  start_bg slurmdbd "$RUNDIR/slurmdbd.out" /usr/sbin/slurmdbd -D
  # sacctmgr needs slurm.conf to name accounting_storage/slurmdbd already (written before)
  wait_for "slurmdbd" sacctmgr -n list cluster
  sacctmgr -i add cluster "$CLUSTER" >/dev/null
  sacctmgr -i add account "$CLUSTER" Cluster="$CLUSTER" Description=ci Organization=ci >/dev/null
  sacctmgr -i add user root Account="$CLUSTER" >/dev/null
}

start() {
  [ "$(id -u)" = 0 ] || die "must run as root (it installs packages and starts system daemons)"
  stop                                   # re-runnable: stop what a previous start left
  install_packages
  mkdir -p "$RUNDIR"
  rm -f "$RUNDIR"/*.log "$RUNDIR"/*.out          # logs of this run only
  local host
  host=$(hostname -s)

  # munge: Debian's postinst made /etc/munge/munge.key (munge:munge 0600) already
  if [ ! -s /etc/munge/munge.key ]; then
    mungekey --create --keyfile=/etc/munge/munge.key
    chown munge:munge /etc/munge/munge.key
    chmod 0600 /etc/munge/munge.key
  fi
  install -d -o munge -g munge -m 0755 /run/munge
  # munged forks; as root it refuses a key owned by munge, so run it as munge
  runuser -u munge -- /usr/sbin/munged --pid-file=/run/munge/munged.pid </dev/null >/dev/null 2>&1
  cp /run/munge/munged.pid "$RUNDIR/munged.pid"
  log "started munged (pid $(cat "$RUNDIR/munged.pid"))"
  wait_for "munge" bash -c 'munge -n | unmunge'

  rm -rf /var/spool/slurmctld /var/spool/slurmd      # fresh job state every run
  mkdir -p /var/spool/slurmctld /var/spool/slurmd /etc/slurm
  write_slurm_conf "$host"

  if [ "$ACCT" = 1 ]; then start_accounting; fi

  start_bg slurmctld "$RUNDIR/slurmctld.out" /usr/sbin/slurmctld -D
  wait_for "slurmctld" scontrol ping
  start_bg slurmd "$RUNDIR/slurmd.out" /usr/sbin/slurmd -D
  wait_for "node $host idle" bash -c "[ \"\$(sinfo -h -n '$host' -o %T)\" = idle ]"
  if [ "$ACCT" = 1 ]; then wait_for "sacct" sacct -n -X; fi
  sinfo >&2
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
