#!/usr/bin/env bash
# `make compose-smoke`: the compose deployment for real, on a small UCM archive.
#   1. engine (docker/engine.sh), base images (docker/base-images.sh), grn:serve (api, worker:
#      no torch) and grn:train (the trainer service) (docker/build.sh); prints their sizes
#   2. a small archive: GRN_SMOKE_PER_CLASS scenes of each UCM scene folder, in a temporary
#      folder (the images copied there, never into the repository)
#   3. `docker compose up -d` (project grn-smoke, the api on a free loopback port): waits for
#      /readyz, then checks through the published port: /readyz, /classify and /search on a
#      real image, the page at /, /metrics, an admin call refused without the key and
#      accepted with it, an import job run by the worker service, a scene added through
#      POST /scenes found and removed
#   4. restarts the api, and `down` then `up` again: the data survived, the same search
#      results, ready in seconds
#   5. an older database (the schema taken back one revision): `up` migrates it before serving
#   6. backup and restore: a pg_dump and the models and index volumes restored into a fresh
#      compose project give the same search results
#   7. bad input, each in turn (project grn-smoke-bad): a weak API key, no archive, an archive
#      without labels.csv, the published port taken, an unreadable image; each stops with one
#      line in the log that /readyz repeats, and the corrected archive continues
#   8. `down -v` of every project, also on failure (images stay cached)
# Prints each step's time. Settings: UCM (default ../shared/datasets/ucm-multilabel),
# GRN_SMOKE_PER_CLASS (8), GRN_SMOKE_TRAIN_OPTIONS ("--epochs 20"), GRN_SMOKE_STEPS (all:
# "main restore bad"), GRN_SMOKE_TIMINGS (a file to append the timings to).
set -euo pipefail
cd "$(dirname "$0")/.."

SMOKE=smoke
# shellcheck source=docker/smoke-common.sh
. docker/smoke-common.sh
PER_CLASS="${GRN_SMOKE_PER_CLASS:-8}"
STEPS="${GRN_SMOKE_STEPS:-main restore bad}"
PROJECT=grn-smoke

t=$SECONDS
DOCKER=$(docker/engine.sh | tail -1)
export DOCKER
took "engine (install when missing, start)" "$t"

t=$SECONDS
docker/base-images.sh
took "base images (make when missing)" "$t"

t=$SECONDS
docker/build.sh
took "image build" "$t"
size_of() { $DOCKER image inspect --format '{{.Size}}' "$1" | awk '{printf "%.2f GB", $1 / 1e9}'; }
IMAGE_SIZE="grn:serve $(size_of grn:serve), grn:train $(size_of grn:train)"
say "images: $IMAGE_SIZE"
# the serving image has no torch
if $DOCKER run --rm --entrypoint python grn:serve -c "import torch" 2>/dev/null; then
    say "grn:serve imports torch"
    exit 1
fi

work=$(mktemp -d /var/tmp/grn-smoke.XXXXXX)
chmod 755 "$work"
compose() { $DOCKER compose -f docker-compose.yml "$@"; }
cleanup() {
    status=$?
    if [ "$status" -ne 0 ]; then
        say "FAILED; the api's last log lines:"
        for project in "$PROJECT" "$PROJECT-restore" "$PROJECT-bad"; do
            compose -p "$project" logs --no-color --tail 60 api 2>/dev/null || true
        done
    fi
    for project in "$PROJECT" "$PROJECT-restore" "$PROJECT-bad"; do
        compose -p "$project" down -v --remove-orphans >/dev/null 2>&1 || true
        # volumes no service of the last `up` used (no-archive) are left by `down -v`
        $DOCKER volume ls -q --filter "label=com.docker.compose.project=$project" \
            | xargs -r $DOCKER volume rm >/dev/null 2>&1 || true
    done
    rm -rf "$work" "$timings.done"
    exit "$status"
}
trap cleanup EXIT

"$PYTHON" docker/smoke.py subset "$UCM" "$work/archive" --per-class "$PER_CLASS"
chmod -R a+rX "$work/archive"
IMAGE=$(find "$work/archive/images" -name '*.jpg' | sort | sed -n 1p)

export GRN_API_KEY GRN_ARCHIVE GRN_PUBLISH_PORT GRN_TRAIN_OPTIONS
GRN_API_KEY=$("$PYTHON" -c 'import secrets; print(secrets.token_hex(24))')
GRN_ARCHIVE="$work/archive"
GRN_PUBLISH_PORT=$(free_port)
GRN_TRAIN_OPTIONS="${GRN_SMOKE_TRAIN_OPTIONS:---epochs 20}"
URL="http://127.0.0.1:$GRN_PUBLISH_PORT"

api_log() { # the api's log, without compose's terminal escapes
    compose -p "$1" logs --no-color --no-log-prefix api 2>/dev/null | sed 's/\x1b\[[0-9;]*[A-Za-z]//g'
}
show_log() { api_log "$1" | grep -E "$2" | sed 's/^/    log: /' >&2 || true; }
wait_ready() { "$PYTHON" docker/smoke.py wait "$URL" --seconds "${1:-900}" >/dev/null; }
api_health() { $DOCKER inspect --format '{{.State.Health.Status}}' "$(compose -p "$1" ps -q api)"; }

if [[ " $STEPS " == *" main "* ]]; then
    say "first up (empty volumes): migrate, import, train, index, serve"
    t=$SECONDS
    compose -p "$PROJECT" up -d
    wait_ready 900
    took "first up to ready (import, train, index)" "$t"
    show_log "$PROJECT" '^grn up: '

    for _ in $(seq 1 30); do [ "$(api_health "$PROJECT")" = healthy ] && break; sleep 1; done
    [ "$(api_health "$PROJECT")" = healthy ] || { say "the api is not healthy"; exit 1; }
    say "the api container is healthy"
    "$PYTHON" docker/smoke.py check "$URL" "$GRN_API_KEY" "$IMAGE"
    "$PYTHON" docker/smoke.py search "$URL" "$IMAGE" >"$work/hits-first.jsonl"

    say "restart the api"
    t=$SECONDS
    compose -p "$PROJECT" restart api
    wait_ready 300
    took "api restart to ready" "$t"
    "$PYTHON" docker/smoke.py search "$URL" "$IMAGE" >"$work/hits-restart.jsonl"
    diff "$work/hits-first.jsonl" "$work/hits-restart.jsonl"
    say "ok: the same search results after the restart"

    say "down, then up again: everything is found in the volumes"
    compose -p "$PROJECT" down
    t=$SECONDS
    compose -p "$PROJECT" up -d
    wait_ready 300
    took "second up to ready" "$t"
    show_log "$PROJECT" 'not training|is current'

    "$PYTHON" docker/smoke.py check "$URL" "$GRN_API_KEY" "$IMAGE"
    "$PYTHON" docker/smoke.py search "$URL" "$IMAGE" >"$work/hits-second.jsonl"
    diff "$work/hits-first.jsonl" "$work/hits-second.jsonl"
    say "ok: the same search results after down and up"

    say "an older database: the schema taken back one revision (to base when there is one), then up"
    compose -p "$PROJECT" stop api
    compose -p "$PROJECT" run --rm --no-deps migrate db downgrade -- -1
    t=$SECONDS
    compose -p "$PROJECT" up -d
    wait_ready 300
    took "up on an older database to ready" "$t"
    compose -p "$PROJECT" run --rm --no-deps migrate db current | tee "$work/current" >&2
    grep -qE 'database at ([^;]+); newest \1$' "$work/current" # at the newest revision
    "$PYTHON" docker/smoke.py search "$URL" "$IMAGE" >"$work/hits-upgraded.jsonl"
    diff "$work/hits-first.jsonl" "$work/hits-upgraded.jsonl"
    say "ok: migrated before serving, the same search results"

    if [[ " $STEPS " == *" restore "* ]]; then
        say "backup: pg_dump and the models and index volumes (docs/deploy.md)"
        t=$SECONDS
        mkdir -p "$work/backup"
        compose -p "$PROJECT" exec -T postgres pg_dump -U grn -d grn --format=custom \
            >"$work/backup/grn.dump"
        for volume in models index; do
            $DOCKER run --rm --user 0 --entrypoint tar -v "${PROJECT}_$volume:/volume:ro" \
                grn:serve -C /volume -c . >"$work/backup/$volume.tar"
        done
        ls -l "$work/backup" >&2
        compose -p "$PROJECT" down -v
        restore="$PROJECT-restore"
        compose -p "$restore" up -d --wait postgres
        compose -p "$restore" exec -T postgres pg_restore -U grn -d grn --no-owner \
            <"$work/backup/grn.dump"
        compose -p "$restore" create api
        for volume in models index; do
            $DOCKER run --rm --user 0 --entrypoint tar -v "${restore}_$volume:/volume" \
                -v "$work/backup:/backup:ro" grn:serve -C /volume -xf "/backup/$volume.tar"
        done
        compose -p "$restore" up -d
        wait_ready 300
        took "backup, restore into a fresh project, up to ready" "$t"
        show_log "$restore" 'not training|is current'

        "$PYTHON" docker/smoke.py search "$URL" "$IMAGE" >"$work/hits-restored.jsonl"
        diff "$work/hits-first.jsonl" "$work/hits-restored.jsonl"
        say "ok: the restored project gives the same search results"
        compose -p "$restore" down -v
    fi
    compose -p "$PROJECT" down -v
fi

if [[ " $STEPS " == *" bad "* ]]; then
    bad="$PROJECT-bad"
    t=$SECONDS
    # $1: what /readyz and the log must say; the rest: the environment of that `up`
    expect_stop() {
        local text="$1"
        shift
        env "$@" "$DOCKER" compose -f docker-compose.yml -p "$bad" up -d
        "$PYTHON" docker/smoke.py wait "$URL" --seconds 120 --expect "$text" >/dev/null
        api_log "$bad" | grep -F "error: " | grep -F "$text" >"$work/line" || {
            say "the api's log does not say '$text'"
            exit 1
        }
        sed -n '1s/^/    log: /p' "$work/line" >&2
        say "ok: stopped with '$text' in the log and on /readyz"
    }
    expect_stop "needs GRN_API_KEY set to a secret" GRN_API_KEY=short
    expect_stop "GRN_ARCHIVE is not set" -u GRN_ARCHIVE
    mkdir -p "$work/nolabels/images/a"
    cp "$IMAGE" "$work/nolabels/images/a/"
    chmod -R a+rX "$work/nolabels"
    expect_stop "holds no labels.csv" GRN_ARCHIVE="$work/nolabels"

    compose -p "$bad" stop api
    "$PYTHON" -m http.server --bind 127.0.0.1 "$GRN_PUBLISH_PORT" >/dev/null 2>&1 &
    holder=$!
    sleep 2
    kill -0 "$holder" # it holds the port
    if compose -p "$bad" up -d 2>"$work/port.log"; then
        kill "$holder"
        say "up succeeded on a taken port"
        exit 1
    fi
    kill "$holder"
    wait "$holder" 2>/dev/null || true
    grep -iE "address already in use|port is already allocated" "$work/port.log" \
        | sed 's/^/    compose: /' >&2
    say "ok: up on a taken port stops with compose's line"

    # an unreadable image listed in labels.csv, then the archive corrected in place
    cp "$work/archive/labels.csv" "$work/labels.good"
    mkdir -p "$work/archive/images/zz"
    echo "not a jpeg" >"$work/archive/images/zz/broken.jpg"
    chmod -R a+rX "$work/archive"
    tail -1 "$work/archive/labels.csv" | sed 's/^[^,]*,[^,]*,/broken,zz,/' >>"$work/archive/labels.csv"
    expect_stop "images of the archive cannot be read"
    rm -r "$work/archive/images/zz"
    cp "$work/labels.good" "$work/archive/labels.csv"
    "$PYTHON" docker/smoke.py wait "$URL" --seconds 120 --expect "training a model" >/dev/null
    show_log "$bad" '^grn up: imported'

    say "ok: the corrected archive continues (the scenes imported before are kept)"
    compose -p "$bad" down -v
    took "bad input checks" "$t"
fi

say "passed in $((SECONDS - started)) s; images $IMAGE_SIZE"
cat "$timings" >&2
echo "images: $IMAGE_SIZE" >>"$timings"
if [ -n "${GRN_SMOKE_TIMINGS:-}" ]; then cat "$timings" >>"$GRN_SMOKE_TIMINGS"; fi
rm -f "$timings"
