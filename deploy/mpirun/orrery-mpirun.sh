#!/usr/bin/env bash
# One Orrery training job under mpirun: S + L + 1 ranks of `orrery mpi-rank` (ranks 0..S-1 are
# the shards, then the learners, then the evaluator). The ranks exchange the shards' endpoints
# with MPI_Allgather and agree on the end with MPI barriers; all parameter traffic is gRPC.
#
#   deploy/mpirun/orrery-mpirun.sh examples/jobs/fashion_mnist.yaml [extra mpirun args...]
#   deploy/mpirun/orrery-mpirun.sh job.yaml --hostfile hosts        # across machines
#
# The job file and the executable must be at the same path on every host. ORRERY names the
# executable (default: orrery in PATH, else build/cli/orrery).
set -euo pipefail

JOB=${1:?usage: orrery-mpirun.sh JOB.yaml [mpirun args...]}
shift
ORRERY=${ORRERY:-$(command -v orrery || echo "$PWD/build/cli/orrery")}

# Ranks = servers + learners + 1 (both default to 1), read from the top-level keys of the spec.
key() { awk -v k="$1" -F: '$1 == k {gsub(/[ \t]|#.*/, "", $2); print $2; exit}' "$JOB"; }
servers=$(key servers); learners=$(key learners)
np=$(( ${servers:-1} + ${learners:-1} + 1 ))

export ORRERY_TOKEN=${ORRERY_TOKEN:-$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')}
export OMP_WAIT_POLICY=passive
args=(--tag-output --oversubscribe -x ORRERY_TOKEN -x OMP_WAIT_POLICY)
# OpenMPI refuses to run as root unless told to.
if [ "$(id -u)" -eq 0 ]; then args+=(--allow-run-as-root); fi

exec mpirun "${args[@]}" "$@" -np "$np" "$ORRERY" mpi-rank "$JOB"
