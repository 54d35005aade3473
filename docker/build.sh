#!/usr/bin/env bash
# Build the images from the project's Dockerfile with BuildKit, passing this host's pip
# settings in as BuildKit secrets for the build only (nothing of the host is kept in the image):
#   pip.conf         index-url, extra-index-url (http and https ones), timeout, and the two
#                    files below by their paths inside the build
#   ca.crt           the CA bundle pip trusts here (pip's `cert`), when one is set
#   constraints.txt  pip's `constraint` file(s), when set
# Local folders in the host's configuration (find-links, file:// indexes) are not carried in:
# PyPI serves the same pinned releases (the locks of requirements/ check their hashes). Settings:
#   GRN_TARGET        the Dockerfile targets to build, each tagged grn:TARGET (default
#                     "serve train": the serving image without torch, then the trainer
#                     image on top of it; cpu is the same as train; cuda)
#   GRN_IMAGE         the tag, when one target is built (default grn:TARGET)
#   GRN_BASE_IMAGE    the Python base image (default grn-base/python:3.11-bookworm)
#   DOCKER            the docker command (default /usr/bin/docker: Debian's, with BuildKit)
set -euo pipefail
cd "$(dirname "$0")/.."

DOCKER="${DOCKER:-/usr/bin/docker}"
TARGETS="${GRN_TARGET:-serve train}"
BASE_IMAGE="${GRN_BASE_IMAGE:-grn-base/python:3.11-bookworm}"
PYTHON="${PYTHON:-python3}"
log() { echo "build: $*" >&2; }

secrets=$(mktemp -d)
trap 'rm -rf "$secrets"' EXIT
# the host's pip settings, as `pip config list` shows them (files and PIP_ variables)
"$PYTHON" - "$secrets" <<'EOF'
import ast, shutil, subprocess, sys
from pathlib import Path

out = Path(sys.argv[1])
listed = subprocess.run(
    [sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True, check=False
).stdout
settings: dict[str, str] = {}
for line in listed.splitlines():
    key, _, value = line.partition("=")
    name = key.split(".", 1)[-1]
    if name in ("cert", "constraint", "index-url", "extra-index-url", "find-links",
                "timeout", "default-timeout", "trusted-host"):
        settings[name] = ast.literal_eval(value)
conf = ["[global]"]
if "cert" in settings:
    shutil.copy(settings["cert"], out / "ca.crt")
    conf.append("cert = /run/secrets/ca.crt")
if "constraint" in settings:
    text = "".join(Path(p).read_text() + "\n" for p in settings["constraint"].split())
    (out / "constraints.txt").write_text(text)
    conf.append("constraint = /run/secrets/constraints.txt")
for name in ("index-url", "extra-index-url"):
    urls = [u for u in settings.get(name, "").split() if u.startswith(("http://", "https://"))]
    left = [u for u in settings.get(name, "").split() if u not in urls]
    if urls:
        conf.append(f"{name} = {' '.join(urls)}")
    for url in left:
        print(f"build: not carried into the build (a local folder): {name} {url}",
              file=sys.stderr)
for folder in settings.get("find-links", "").split():
    print(f"build: not carried into the build (a local folder): find-links {folder}",
          file=sys.stderr)
timeout = settings.get("default-timeout") or settings.get("timeout")
if timeout:
    conf.append(f"default-timeout = {timeout}")
if "trusted-host" in settings:
    conf.append(f"trusted-host = {settings['trusted-host']}")
(out / "pip.conf").write_text("\n".join(conf) + "\n")
EOF

secret_args=()
for name in pip.conf ca.crt constraints.txt; do
    if [ -f "$secrets/$name" ]; then secret_args+=(--secret "id=$name,src=$secrets/$name"); fi
done
for TARGET in $TARGETS; do
    IMAGE="grn:$TARGET"
    if [ "$TARGETS" = "$TARGET" ]; then IMAGE="${GRN_IMAGE:-$IMAGE}"; fi
    log "$IMAGE: target $TARGET, base $BASE_IMAGE"
    DOCKER_BUILDKIT=1 $DOCKER build --progress=plain \
        --target "$TARGET" \
        --build-arg "BASE_IMAGE=$BASE_IMAGE" \
        "${secret_args[@]}" \
        --tag "$IMAGE" .
    log "$IMAGE: $($DOCKER image inspect --format '{{.Size}}' "$IMAGE" | awk '{printf "%.2f GB", $1 / 1e9}')"
done
