#!/usr/bin/env bash
# A single-node Slurm on this machine, for trying the slurm backend and for its tests: its own
# munged (own key and socket), slurmctld and slurmd in the foreground (-D) as background
# processes, with a slurm.conf written into DIR (free ports, this node's real CPUs and memory from
# `slurmd -C`, proctrack/linuxproc, task/none, no accounting). Nothing outside DIR is touched and
# no system service is enabled. Needs root (slurmd starts tasks) and `scripts/install-deps.sh slurm`.
#
#   scripts/slurm-local.sh start DIR   # prints: export SLURM_CONF=DIR/slurm.conf
#   scripts/slurm-local.sh stop DIR
#
# Exit codes of start: 0 the node is idle and takes jobs; 3 Slurm cannot run here (not
# installed, not root); 1 the daemons did not come up (their logs' last lines are printed).
set -euo pipefail

cmd=${1:-}; dir=${2:-}
if [ -z "$cmd" ] || [ -z "$dir" ]; then echo "usage: slurm-local.sh start|stop DIR" >&2; exit 2; fi

stop() {
  [ -f "$dir/pids" ] || return 0
  local pids; pids=$(tac "$dir/pids")
  kill -TERM $pids 2>/dev/null || true
  for _ in $(seq 100); do
    kill -0 $pids 2>/dev/null || break
    sleep 0.1
  done
  kill -KILL $pids 2>/dev/null || true
  rm -f "$dir/pids"
}

# A port nothing listens on, below the kernel's ephemeral range: the ports other programs get
# from bind(0) (the servers of tests running beside this one) come from that range, and one of
# them once took the port picked here before slurmd bound it. Not $1 (the other daemon's).
free_port() {
  local p low
  low=$(cut -f1 /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)
  while :; do
    if [ "$low" -gt 12000 ]; then p=$(( 10000 + RANDOM % (low - 10000) )); else p=$(( 20000 + RANDOM % 40000 )); fi
    [ "$p" = "${1:-}" ] && continue
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then echo "$p"; return; fi
  done
}

tail_logs() {
  for f in "$dir"/log/*; do echo "  $f:"; tail -n 8 "$f" | sed 's/^/    /'; done >&2
}

case "$cmd" in
  stop) stop; exit 0 ;;
  start) ;;
  *) echo "slurm-local.sh: unknown command '$cmd' (expected start or stop)" >&2; exit 2 ;;
esac

for tool in /usr/sbin/munged /usr/sbin/slurmctld /usr/sbin/slurmd /usr/bin/sbatch /usr/bin/squeue \
            /usr/bin/scancel /usr/bin/scontrol /usr/bin/sinfo; do
  if [ ! -x "$tool" ]; then echo "slurm-local: $tool is not installed (scripts/install-deps.sh slurm)" >&2; exit 3; fi
done
if [ "$(id -u)" -ne 0 ]; then echo "slurm-local: slurmd must run as root to start tasks" >&2; exit 3; fi

stop
mkdir -p "$dir"/{munge,ctld,d,log}
dir=$(cd "$dir" && pwd)
chmod 700 "$dir/munge"
head -c 1024 /dev/urandom > "$dir/munge/munge.key"
chmod 600 "$dir/munge/munge.key"
: > "$dir/pids"

/usr/sbin/munged --foreground --force --socket="$dir/munge/sock" --key-file="$dir/munge/munge.key" \
  --pid-file="$dir/munge/munged.pid" --seed-file="$dir/munge/seed" --log-file="$dir/log/munged.log" \
  </dev/null >"$dir/log/munged.out" 2>&1 &
echo $! >> "$dir/pids"

# This node as slurmd itself sees it: "NodeName=vm CPUs=2 Boards=1 ... RealMemory=24105".
node=$(/usr/sbin/slurmd -C 2>/dev/null | head -n 1 | cut -d' ' -f2-)
ctld_port=$(free_port)
d_port=$(free_port "$ctld_port")
cat > "$dir/slurm.conf" <<CONF
ClusterName=orrerylocal
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort=$ctld_port
SlurmdPort=$d_port
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$dir/munge/sock
CredType=cred/munge
StateSaveLocation=$dir/ctld
SlurmdSpoolDir=$dir/d
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/builtin
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MpiDefault=none
ReturnToService=2
KillWait=5
MinJobAge=300
InactiveLimit=0
SlurmdTimeout=60
NodeName=localhost NodeHostname=$(hostname) NodeAddr=127.0.0.1 $node State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
CONF

for _ in $(seq 200); do [ -S "$dir/munge/sock" ] && break; sleep 0.05; done
/usr/sbin/slurmctld -D -i -f "$dir/slurm.conf" </dev/null >"$dir/log/slurmctld.out" 2>&1 &
echo $! >> "$dir/pids"
/usr/sbin/slurmd -D -N localhost -f "$dir/slurm.conf" </dev/null >"$dir/log/slurmd.out" 2>&1 &
echo $! >> "$dir/pids"

for _ in $(seq 300); do
  state=$(SLURM_CONF="$dir/slurm.conf" /usr/bin/sinfo --noheader --nodes=localhost --format=%t 2>/dev/null || true)
  if [ "$state" = "idle" ]; then
    echo "export SLURM_CONF=$dir/slurm.conf"
    exit 0
  fi
  sleep 0.2
done
echo "slurm-local: the node did not become idle within 60 s (sinfo: '$state')" >&2
tail_logs
stop
exit 1
