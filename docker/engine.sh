#!/usr/bin/env bash
# A Docker engine and compose v2 on a Debian bookworm machine, without a registry:
#   - Debian's docker.io (engine 20.10 with BuildKit in its client) when dockerd is missing;
#   - compose v2 (Debian trixie's docker-compose package, a static Go binary) as a CLI plugin
#     in /usr/local/lib/docker/cli-plugins (found by every user's client), fetched with a private apt sources list that leaves the
#     system's apt state alone;
#   - dockerd started in the background (log: /var/log/grn-dockerd.log) when it does not answer.
# Idempotent: each step is skipped when already done. Runs as root, or with sudo otherwise.
# Prints the docker command to use on its last line: Debian's client, which has BuildKit
# (`/usr/bin/docker`, or `sudo /usr/bin/docker` when this user cannot reach the daemon).
set -euo pipefail

sudo=""
if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
COMPOSE_PLUGIN_DIR=/usr/local/lib/docker/cli-plugins
DEBIAN_MIRROR="${GRN_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
log() { echo "engine: $*" >&2; }

# Debian's client (/usr/bin/docker) has BuildKit; another client earlier on PATH may lack
# buildx (`docker build` then refuses BuildKit), so the scripts name this one.
DOCKER=/usr/bin/docker

if [ ! -x /usr/sbin/dockerd ] || [ ! -x "$DOCKER" ]; then
    log "installing Debian's docker.io"
    $sudo apt-get update -q
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends \
        docker.io iptables ca-certificates >&2
fi

if ! "$DOCKER" compose version >/dev/null 2>&1; then
    log "installing compose v2 (Debian trixie's docker-compose) as a CLI plugin"
    work=$(mktemp -d)
    trap 'rm -rf "$work"' EXIT
    mkdir -p "$work/lists/partial" "$work/cache/archives/partial" "$work/etc/preferences.d"
    echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $DEBIAN_MIRROR trixie main" \
        >"$work/etc/sources.list"
    apt_private=(
        -o Dir::Etc::SourceList="$work/etc/sources.list"
        -o Dir::Etc::SourceParts=-
        -o Dir::Etc::Preferences="$work/etc/preferences"
        -o Dir::Etc::PreferencesParts="$work/etc/preferences.d"
        -o Dir::State::Lists="$work/lists"
        -o Dir::Cache="$work/cache"
        -o Debug::NoLocking=1
        -o APT::Sandbox::User=root
    )
    apt-get -q "${apt_private[@]}" update >&2
    (cd "$work" && apt-get -q "${apt_private[@]}" download docker-compose >&2)
    dpkg-deb -x "$work"/docker-compose_*.deb "$work/root"
    $sudo mkdir -p "$COMPOSE_PLUGIN_DIR"
    $sudo install -m 0755 "$work/root/usr/libexec/docker/cli-plugins/docker-compose" \
        "$COMPOSE_PLUGIN_DIR/docker-compose"
fi

if ! $sudo "$DOCKER" info >/dev/null 2>&1; then
    log "starting dockerd in the background (log: /var/log/grn-dockerd.log)"
    # setsid: the daemon outlives this script and the shell that ran it
    $sudo sh -c 'setsid /usr/sbin/dockerd >>/var/log/grn-dockerd.log 2>&1 </dev/null &'
    for _ in $(seq 1 60); do
        if $sudo "$DOCKER" info >/dev/null 2>&1; then break; fi
        sleep 1
    done
    $sudo "$DOCKER" info >/dev/null || {
        log "dockerd did not answer within 60 s"
        exit 1
    }
fi

if ! "$DOCKER" info >/dev/null 2>&1; then DOCKER="sudo $DOCKER"; fi
log "$($DOCKER version --format 'engine {{.Server.Version}}, client {{.Client.Version}}' 2>/dev/null || echo ready), $($DOCKER compose version 2>/dev/null)"
echo "$DOCKER"
