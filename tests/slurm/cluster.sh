#!/usr/bin/env bash
# A private one-node SLURM cluster (munged, slurmctld, slurmd on 127.0.0.1) for the `slurm` tests, started by
# hand: no systemd, Debian's packages (SLURM 22.05). Needs root; installs the packages with apt when missing.
#
#   tests/slurm/cluster.sh start    install if needed, write the config, start what is not running, wait
#                                   until a batch job completes
#   tests/slurm/cluster.sh stop     cancel this cluster's jobs, stop the daemons this script started
#   tests/slurm/cluster.sh status   exit 0 when this script's slurmctld and slurmd are running
#
# Everything of the cluster lives in $FER_SLURM_DIR (default ${TMPDIR:-/tmp}/fer-pipeline-slurm): slurm.conf,
# state, spool, logs and the pid of each daemon this script started; stop only ever kills those pids.
# Clients (sbatch, squeue, and the srun that snakemake's job step runs inside each job, which drops SLURM_CONF
# from its environment) read /etc/slurm/slurm.conf, so while the cluster runs that is a link to this one's
# config; stop removes the link. A machine whose /etc/slurm/slurm.conf is a real file is left alone.
# (Without any slurm.conf, `scontrol` fails at once; with one and no controller it retries for 10 s, which the
# slurm plugin does whenever snakemake starts: the link must not outlive the cluster.)
# Munge is the system's: a munged that already answers is used (and never stopped); else one is started.
# Ports 16817/16818, not SLURM's defaults, so a site's own daemons on the same machine are not in the way.
set -euo pipefail

DIR=${FER_SLURM_DIR:-${TMPDIR:-/tmp}/fer-pipeline-slurm}
CONF=$DIR/slurm.conf
SYSTEM_CONF=/etc/slurm/slurm.conf
WAIT_S=${FER_SLURM_WAIT_S:-60}

t0=$(date +%s.%N)
log() { echo "[cluster.sh +$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}')s] $*"; }
die() { echo "cluster.sh: $*" >&2; exit 1; }

# Is the pid in $DIR/NAME.pid alive and really NAME (a recycled pid is not ours)?
running() {
  local pid
  [ -s "$DIR/$1.pid" ] || return 1
  pid=$(cat "$DIR/$1.pid")
  [ -d "/proc/$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$1" ]
}

# Poll a command until it succeeds or WAIT_S passes.
wait_for() {
  local what=$1; shift
  for _ in $(seq 1 $((WAIT_S * 10))); do "$@" >/dev/null 2>&1 && return 0; sleep 0.1; done
  die "timed out after ${WAIT_S}s waiting for $what"
}

install_packages() {
  local missing=0
  for binary in slurmctld slurmd sbatch squeue munged; do command -v "$binary" >/dev/null || missing=1; done
  [ "$missing" = 0 ] && return
  command -v apt-get >/dev/null || die "SLURM is not installed and there is no apt-get to install it"
  log "installing slurmctld slurmd slurm-client munge with apt"
  # The packages' post-install scripts try to start the services through systemd and fail harmlessly here.
  local apt=(env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends slurmctld slurmd
             slurm-client munge)
  "${apt[@]}" >"$DIR/apt.log" 2>&1 || { apt-get update >>"$DIR/apt.log" 2>&1 && "${apt[@]}" >>"$DIR/apt.log" 2>&1; } \
    || { tail -5 "$DIR/apt.log" >&2; die "apt-get install failed (log: $DIR/apt.log)"; }
}

start_munge() {
  if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
    running munged && log "munged running (pid $(cat "$DIR/munged.pid"))" \
                   || log "using the munged that is already running (not started here, never stopped here)"
    return
  fi
  mkdir -p /etc/munge /var/lib/munge /var/log/munge /run/munge
  if [ ! -s /etc/munge/munge.key ]; then
    dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none
    log "created /etc/munge/munge.key"
  fi
  chown munge:munge /etc/munge /etc/munge/munge.key /var/lib/munge /var/log/munge /run/munge
  chmod 0700 /etc/munge && chmod 0400 /etc/munge/munge.key && chmod 0755 /run/munge
  rm -f /run/munge/munged.pid
  # munged forks into the background itself and writes its own pid file, which is copied as ours.
  runuser -u munge -- /usr/sbin/munged </dev/null >>"$DIR/log/munged.stdout" 2>&1
  wait_for "munged's pid file" test -s /run/munge/munged.pid
  cp /run/munge/munged.pid "$DIR/munged.pid"
  wait_for munged sh -c 'munge -n | unmunge'
  log "munged started (pid $(cat "$DIR/munged.pid"))"
}

write_config() {
  local host spec cpus memory
  host=$(hostname -s)
  spec=$(slurmd -C | head -1)
  cpus=$(sed -n 's/.* CPUs=\([0-9]*\).*/\1/p' <<<"$spec")
  memory=$(sed -n 's/.* RealMemory=\([0-9]*\).*/\1/p' <<<"$spec")
  [ -n "$cpus" ] && [ -n "$memory" ] || die "could not read CPUs and RealMemory from 'slurmd -C': $spec"
  cat >"$CONF.new" <<CONFIG
# Written by tests/slurm/cluster.sh: a private one-node cluster on 127.0.0.1.
ClusterName=ferpipeline
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=16817
SlurmdPort=16818
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
# A job without --mem would otherwise be given the whole node's memory.
DefMemPerCPU=1000
SchedulerType=sched/backfill
ReturnToService=2
# No accounting database (sacct does not work): snakemake polls with squeue, which sees a finished job for
# MinJobAge seconds; the slurm plugin wants at least 3x its first status-check delay.
MinJobAge=300
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$memory State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
CONFIG
  if cmp -s "$CONF.new" "$CONF"; then rm "$CONF.new"; return; fi
  mv "$CONF.new" "$CONF"
  log "wrote $CONF ($cpus CPUs, $memory MB)"
  # A changed config needs restarted daemons.
  stop_daemon slurmd
  stop_daemon slurmctld
}

ours() { [ -L "$SYSTEM_CONF" ] && [ "$(readlink "$SYSTEM_CONF")" = "$CONF" ]; }

link_config() {
  ours && return
  mkdir -p "$(dirname "$SYSTEM_CONF")"
  ln -s "$CONF" "$SYSTEM_CONF"
  log "linked $SYSTEM_CONF -> $CONF"
}

start_daemon() {  # NAME ARGS...: run /usr/sbin/NAME in the foreground, in a session of its own
  local name=$1; shift
  if running "$name"; then log "$name running (pid $(cat "$DIR/$name.pid"))"; return; fi
  setsid /usr/sbin/"$name" "$@" </dev/null >>"$DIR/log/$name.stdout" 2>&1 &
  echo $! >"$DIR/$name.pid"
  log "$name started (pid $!)"
}

stop_daemon() {  # NAME: only the pid this script recorded, and only while it is still NAME
  local pid
  if running "$1"; then
    pid=$(cat "$DIR/$1.pid")
    kill -TERM "$pid"
    for _ in $(seq 1 150); do [ -d "/proc/$pid" ] || break; sleep 0.1; done
    if [ -d "/proc/$pid" ]; then kill -KILL "$pid"; log "$1 (pid $pid) killed"; else log "$1 (pid $pid) stopped"; fi
  fi
  rm -f "$DIR/$1.pid"
}

wait_until_ready() {
  local host state="" job job_state=""
  host=$(hostname -s)
  for _ in $(seq 1 $((WAIT_S * 4))); do
    state=$(sinfo -h -n "$host" -o %t 2>/dev/null | head -1 || true)
    case "$state" in
      idle|mix|alloc) break ;;
      down*|drain*) scontrol update NodeName="$host" State=RESUME >/dev/null 2>&1 || true ;;
    esac
    for daemon in slurmctld slurmd; do
      running "$daemon" || { tail -20 "$DIR/log/$daemon.log" "$DIR/log/$daemon.stdout" >&2 2>/dev/null || true
                             die "$daemon exited (logs in $DIR/log)"; }
    done
    sleep 0.25
  done
  case "$state" in idle|mix|alloc) log "node $host is $state" ;; *) die "node $host is '$state', not idle" ;; esac
  # A node can read idle before slurmd has registered again: the proof is a batch job that completes.
  job=$(cd "$DIR" && sbatch --parsable --output=/dev/null --wrap true)
  for _ in $(seq 1 $((WAIT_S * 5))); do
    job_state=$(scontrol -o show job "$job" 2>/dev/null | sed -n 's/.*JobState=\([A-Z_]*\).*/\1/p')
    case "$job_state" in COMPLETED|FAILED|CANCELLED|TIMEOUT|NODE_FAIL|OUT_OF_MEMORY) break ;; esac
    sleep 0.2
  done
  [ "$job_state" = COMPLETED ] || die "test job $job ended as '$job_state' (logs in $DIR/log)"
  log "test job $job completed"
}

case "${1:-}" in
  start)
    [ "$(id -u)" = 0 ] || die "must run as root (it installs packages and starts munged, slurmctld, slurmd)"
    # Checked before anything is done, so that a machine with a SLURM of its own is not touched.
    ours || [ ! -e "$SYSTEM_CONF" ] || die "$SYSTEM_CONF exists and is not this cluster's: this machine has a SLURM of its own"
    mkdir -p "$DIR"/{state,spool,run,log}
    install_packages
    start_munge
    write_config
    link_config
    start_daemon slurmctld -D -i -f "$CONF"
    start_daemon slurmd -D -f "$CONF"
    wait_until_ready
    ;;
  stop)
    if running slurmctld; then scancel --user="$(id -un)" >/dev/null 2>&1 || true; fi
    stop_daemon slurmd
    stop_daemon slurmctld
    stop_daemon munged
    if ours; then rm "$SYSTEM_CONF"; log "removed the link $SYSTEM_CONF"; fi
    ;;
  status)
    running slurmctld && running slurmd
    ;;
  *)
    die "usage: $0 start|stop|status"
    ;;
esac
