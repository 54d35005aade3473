#!/bin/sh
# The last steps of both image targets (Dockerfile), run with the sources bind-mounted at
# SRC (default /src) and pip's settings as BuildKit secrets: the project itself into the
# image's environment (its dependencies are installed already, in a layer of their own),
# then the web page's map library from the npm registry, checked against its pinned hash.
set -eu
src="${1:-/src}"
if [ -f /run/secrets/pip.conf ]; then
    PIP_CONFIG_FILE=/run/secrets/pip.conf pip install --no-deps "$src"
else
    pip install --no-deps "$src"
fi
if [ -f /run/secrets/ca.crt ]; then
    SSL_CERT_FILE=/run/secrets/ca.crt grn assets --asset-dir /opt/grn-assets
else
    grn assets --asset-dir /opt/grn-assets
fi
