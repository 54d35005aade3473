# What docker/smoke.sh and docker/cluster-smoke.sh share, sourced by both from the repository
# root: the UCM archive and python3 to use, their lines (`say`, prefixed with SMOKE), each
# step's time (`took NAME START`, kept in $timings for the summary) and a free loopback port.
UCM="${UCM:-../shared/datasets/ucm-multilabel}"
PYTHON="${PYTHON:-python3}"
started=$SECONDS
timings=$(mktemp)

say() { echo "== $SMOKE: $*" >&2; }
took() { # NAME START: record a step's time
    local seconds=$((SECONDS - $2))
    echo "$1: ${seconds} s" >>"$timings"
    say "$1 took ${seconds} s"
}
free_port() { "$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
