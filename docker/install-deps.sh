#!/bin/sh
# The dependency layers of the image targets (Dockerfile): the locked set SET
# (requirements/SET.lock, bind-mounted at /tmp/deps/SET.lock: serve, train or cuda), every
# package at its pinned version and checked against its hashes, installed by pip with its
# settings from the BuildKit secret `pip.conf` when the build was given one.
set -eu
if [ -f /run/secrets/pip.conf ]; then export PIP_CONFIG_FILE=/run/secrets/pip.conf; fi
pip install --require-hashes --requirement "/tmp/deps/$1.lock"
