#!/bin/sh
# The dependency layers of the image targets (Dockerfile): what pyproject.toml (at
# /tmp/deps/pyproject.toml, bind-mounted) lists in the groups named, `dependencies` for the
# project's own and any other word for that optional extra, installed by pip with its
# settings from the BuildKit secret `pip.conf` when the build was given one.
set -eu
python - "$@" >/tmp/deps-requirements.txt <<'PY'
import sys
import tomllib

with open("/tmp/deps/pyproject.toml", "rb") as handle:
    project = tomllib.load(handle)["project"]
for group in sys.argv[1:]:
    listed = project["dependencies"] if group == "dependencies" else project["optional-dependencies"][group]
    print("\n".join(listed))
PY
if [ -f /run/secrets/pip.conf ]; then export PIP_CONFIG_FILE=/run/secrets/pip.conf; fi
pip install --requirement /tmp/deps-requirements.txt
rm /tmp/deps-requirements.txt
