#!/usr/bin/env bash
# The base images the Dockerfile and docker-compose.yml expect, made from Debian packages
# where no container registry is reachable (debootstrap, then `docker import`):
#   grn-base/python:3.11-bookworm    Debian bookworm minbase with python3 (3.11) and venv
#   grn-base/postgres:15-bookworm    Debian bookworm's PostgreSQL 15 with an entry point that
#                                    initialises an empty data volume from POSTGRES_USER,
#                                    POSTGRES_PASSWORD and POSTGRES_DB (as the Docker Hub
#                                    image does) and runs the server as `postgres`
#   grn-base/nginx:bookworm          Debian bookworm's nginx, the load balancer of the compose
#                                    `cluster` profile (docker/cluster-nginx.conf)
# An image whose tag already exists is left alone (FORCE=1 remakes them). Where a registry is
# reachable, Docker Hub's python:3.11-slim-bookworm, postgres:15-bookworm and nginx serve
# instead (BASE_IMAGE build argument, GRN_POSTGRES_IMAGE, GRN_NGINX_IMAGE).
# Needs root (or sudo) for debootstrap. Usage: docker/base-images.sh [DOCKER]
set -euo pipefail

DOCKER="${DOCKER:-${1:-/usr/bin/docker}}"
PYTHON_TAG="${GRN_BASE_IMAGE:-grn-base/python:3.11-bookworm}"
POSTGRES_TAG="${GRN_POSTGRES_IMAGE:-grn-base/postgres:15-bookworm}"
NGINX_TAG="${GRN_NGINX_IMAGE:-grn-base/nginx:bookworm}"
MIRROR="${GRN_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
SUITE=bookworm
sudo=""
if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
log() { echo "base-images: $*" >&2; }

have() { $DOCKER image inspect "$1" >/dev/null 2>&1 && [ -z "${FORCE:-}" ]; }

if have "$PYTHON_TAG" && have "$POSTGRES_TAG" && have "$NGINX_TAG"; then
    log "$PYTHON_TAG, $POSTGRES_TAG and $NGINX_TAG are present"
    exit 0
fi

if ! command -v debootstrap >/dev/null 2>&1; then
    log "installing debootstrap"
    $sudo apt-get update -q
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends debootstrap >&2
fi

work=$(mktemp -d /var/tmp/grn-base.XXXXXX)
trap '$sudo rm -rf "$work"' EXIT

# debootstrap DIR PACKAGES: a minbase bookworm tree, without apt lists, caches or logs
bootstrap() {
    local dir="$1" include="$2"
    $sudo debootstrap --variant=minbase --include="$include" "$SUITE" "$dir" "$MIRROR" \
        >"$dir.log" 2>&1 || {
        tail -20 "$dir.log" >&2
        return 1
    }
    $sudo rm -rf "$dir"/var/lib/apt/lists/* "$dir"/var/cache/apt/*.bin \
        "$dir"/var/cache/apt/archives/*.deb "$dir"/var/log/*.log "$dir"/var/log/apt/*
}

pids=()
if ! have "$PYTHON_TAG"; then
    log "debootstrap $SUITE minbase with python3 -> $PYTHON_TAG"
    bootstrap "$work/python" python3,python3-venv,python-is-python3 &
    pids+=("$!")
fi
if ! have "$POSTGRES_TAG"; then
    log "debootstrap $SUITE minbase with postgresql -> $POSTGRES_TAG"
    bootstrap "$work/postgres" postgresql &
    pids+=("$!")
fi
if ! have "$NGINX_TAG"; then
    log "debootstrap $SUITE minbase with nginx -> $NGINX_TAG"
    bootstrap "$work/nginx" nginx &
    pids+=("$!")
fi
for pid in "${pids[@]}"; do wait "$pid"; done

if [ -d "$work/python" ]; then
    $sudo tar -C "$work/python" -c . | $DOCKER import \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'ENV LANG=C.UTF-8' \
        --change 'CMD ["python3"]' \
        --message "debootstrap --variant=minbase $SUITE + python3 python3-venv" \
        - "$PYTHON_TAG" >/dev/null
    log "made $PYTHON_TAG"
fi

if [ -d "$work/postgres" ]; then
    root="$work/postgres"
    # the package's own cluster (made by its postinst) is not used: the entry point makes one
    # in the data volume
    $sudo rm -rf "$root"/var/lib/postgresql/15 "$root"/etc/postgresql/15
    major=$(ls "$root/usr/lib/postgresql")
    $sudo install -m 0755 "$(dirname "$0")/postgres-entrypoint.sh" \
        "$root/usr/local/bin/docker-entrypoint.sh"
    $sudo tar -C "$root" -c . | $DOCKER import \
        --change "ENV PATH=/usr/lib/postgresql/$major/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
        --change 'ENV PGDATA=/var/lib/postgresql/data' \
        --change 'ENV LANG=C.UTF-8' \
        --change 'VOLUME /var/lib/postgresql/data' \
        --change 'EXPOSE 5432' \
        --change 'ENTRYPOINT ["/usr/local/bin/docker-entrypoint.sh"]' \
        --change 'CMD ["postgres"]' \
        --message "debootstrap --variant=minbase $SUITE + postgresql ($major)" \
        - "$POSTGRES_TAG" >/dev/null
    log "made $POSTGRES_TAG (PostgreSQL $major)"
fi

if [ -d "$work/nginx" ]; then
    # the package's default site is not used: the cluster profile mounts its own nginx.conf
    $sudo rm -f "$work/nginx"/etc/nginx/sites-enabled/default
    $sudo tar -C "$work/nginx" -c . | $DOCKER import \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'EXPOSE 80' \
        --change 'CMD ["nginx", "-g", "daemon off;"]' \
        --message "debootstrap --variant=minbase $SUITE + nginx" \
        - "$NGINX_TAG" >/dev/null
    log "made $NGINX_TAG ($($DOCKER run --rm "$NGINX_TAG" nginx -v 2>&1))"
fi
