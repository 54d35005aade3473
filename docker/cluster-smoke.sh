#!/usr/bin/env bash
# `make cluster-smoke`: the compose `cluster` profile for real, on a small UCM archive: two API
# replicas (`api` runs `grn up`, `api-2` `grn serve`) and two job workers over one PostgreSQL
# and one Milvus server, behind nginx on one published port (docs/deploy.md, "Replicas").
#   1. engine, base images (grn-base/nginx among them) when missing; the images grn:serve and
#      grn:train as `make compose-smoke` built them (built here only when missing: after a
#      code change, run docker/build.sh first) and grn:milvus (built, from the cache when unchanged)
#   2. a small archive (GRN_CLUSTER_PER_CLASS scenes of each UCM scene folder)
#   3. `up -d --scale worker=2` in the project grn-cluster (GRN_VECTOR_STORE=milvus, a job
#      lease of GRN_CLUSTER_LEASE_SECONDS), the balancer and the api on free loopback ports;
#      waits for /readyz through the balancer
#   4. docker/cluster_smoke.py: both replicas serve one model and index version; scenes
#      written through the balancer are searched on each replica within 1 s; an import job
#      runs once on one worker, a reindex job whose worker is killed is taken over after the
#      lease; a model promoted reaches both replicas; a load run with one replica killed
#      (counts printed; no acknowledged write lost), the replica started again
#   5. `down -v`, also on failure (images stay cached)
# Prints each step's time and the whole. Settings: UCM, GRN_CLUSTER_PER_CLASS (4),
# GRN_CLUSTER_TRAIN_OPTIONS ("--epochs 5"), GRN_CLUSTER_LEASE_SECONDS (5),
# GRN_CLUSTER_STEPS (all: "replicas visible jobs promotion load"), GRN_CLUSTER_LOAD_SECONDS
# (24), GRN_SMOKE_TIMINGS (a file to append the timings to).
set -euo pipefail
cd "$(dirname "$0")/.."

SMOKE="cluster smoke"
# shellcheck source=docker/smoke-common.sh
. docker/smoke-common.sh
PROJECT=grn-cluster
LEASE="${GRN_CLUSTER_LEASE_SECONDS:-5}"

t=$SECONDS
DOCKER=$(docker/engine.sh | tail -1)
export DOCKER
docker/base-images.sh
# grn:milvus is built every time (from the layer cache when nothing changed: seconds), so a
# changed lock or runner never meets a stale image; serve and train when missing
targets=(milvus)
for target in serve train; do
    $DOCKER image inspect "grn:$target" >/dev/null 2>&1 || targets+=("$target")
done
say "building: ${targets[*]}"
GRN_TARGET="${targets[*]}" docker/build.sh
took "cluster: engine, base images, images (made when missing)" "$t"
say "grn:milvus $($DOCKER image inspect --format '{{.Size}}' grn:milvus | awk '{printf "%.2f GB", $1 / 1e9}')"

work=$(mktemp -d /var/tmp/grn-cluster.XXXXXX)
chmod 755 "$work"
compose() { $DOCKER compose -f docker-compose.yml -p "$PROJECT" --profile cluster "$@"; }
cleanup() {
    status=$?
    if [ "$status" -ne 0 ]; then
        say "FAILED; the last log lines:"
        compose logs --no-color --tail 40 api api-2 worker balancer milvus 2>/dev/null || true
    fi
    compose down -v --remove-orphans >/dev/null 2>&1 || true
    $DOCKER volume ls -q --filter "label=com.docker.compose.project=$PROJECT" \
        | xargs -r $DOCKER volume rm >/dev/null 2>&1 || true
    rm -rf "$work"
    exit "$status"
}
trap cleanup EXIT

"$PYTHON" docker/smoke.py subset "$UCM" "$work/archive" --per-class "${GRN_CLUSTER_PER_CLASS:-4}"
chmod -R a+rX "$work/archive"

export GRN_API_KEY GRN_ARCHIVE GRN_PUBLISH_PORT GRN_CLUSTER_PORT GRN_TRAIN_OPTIONS \
    GRN_VECTOR_STORE GRN_JOB_LEASE_SECONDS
GRN_API_KEY=$("$PYTHON" -c 'import secrets; print(secrets.token_hex(24))')
GRN_ARCHIVE="$work/archive"
GRN_PUBLISH_PORT=$(free_port)
GRN_CLUSTER_PORT=$(free_port)
GRN_TRAIN_OPTIONS="${GRN_CLUSTER_TRAIN_OPTIONS:---epochs 5}"
GRN_VECTOR_STORE=milvus
GRN_JOB_LEASE_SECONDS=$LEASE
URL="http://127.0.0.1:$GRN_CLUSTER_PORT"

say "up: postgres, milvus, migrate, trainer, api (grn up), api-2 (grn serve), 2 workers, balancer"
t=$SECONDS
compose up -d --scale worker=2
"$PYTHON" docker/smoke.py wait "$URL" --seconds 900 >/dev/null
took "cluster: up to ready through the balancer (import, train, index into Milvus)" "$t"

t=$SECONDS
# shellcheck disable=SC2086  # the steps are words
"$PYTHON" docker/cluster_smoke.py "$URL" "$GRN_API_KEY" --docker "$DOCKER" \
    --compose "$DOCKER compose -f docker-compose.yml -p $PROJECT --profile cluster" \
    --lease "$LEASE" --load-seconds "${GRN_CLUSTER_LOAD_SECONDS:-24}" \
    --steps ${GRN_CLUSTER_STEPS:-replicas visible jobs promotion load} | tee "$work/checks" >&2
grep -E '^[a-z]+: [0-9]+ s$' "$work/checks" | sed 's/^/cluster check /' >>"$timings"
took "cluster: checks" "$t"
say "what each container holds now (docker stats):"
# shellcheck disable=SC2046  # the container ids are words
$DOCKER stats --no-stream --format '{{.Name}}: {{.MemUsage}}, CPU {{.CPUPerc}}' $(compose ps -q) \
    | sed "s/^$PROJECT-/    /" | sort >&2

compose down -v
say "passed in $((SECONDS - started)) s"
echo "cluster smoke: $((SECONDS - started)) s" >>"$timings"
cat "$timings" >&2
if [ -n "${GRN_SMOKE_TIMINGS:-}" ]; then cat "$timings" >>"$GRN_SMOKE_TIMINGS"; fi
rm -f "$timings"
