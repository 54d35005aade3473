# syntax=docker/dockerfile:1
# GRN scene retrieval: one image for the API (`serve`, the default command) and every `grn` job.
#   docker build -t grn:cpu .                     CPU image (default target)
#   docker build --target cuda -t grn:cuda .      CUDA torch and faiss-gpu (needs the NVIDIA
#                                                 container toolkit on the host to use a GPU)
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---- dependencies and the project, in a virtual environment --------------------------------
FROM ${PYTHON_IMAGE} AS builder-base
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH
RUN python -m venv /opt/venv
WORKDIR /src
COPY pyproject.toml README.md ./
COPY model ./model
COPY index ./index
COPY service ./service
COPY migrations ./migrations

FROM builder-base AS builder-cpu
# torch's CPU build: the default PyPI wheel carries CUDA libraries (gigabytes). The milvus
# extra lets the image search a Milvus server (GRN_VECTOR_STORE=milvus). DL3013: '.[milvus]'
# is this project, its versions set in pyproject.toml
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
# hadolint ignore=DL3013
RUN pip install --index-url "${TORCH_INDEX_URL}" torch==2.14.1 torchvision==0.29.1 \
    && pip install '.[milvus]'

FROM builder-base AS builder-cuda
# the PyPI torch wheel brings its CUDA libraries; faiss-gpu-cu12 replaces faiss-cpu (both
# provide the faiss module). DL3013: '.[gpu]' is this project, its versions set in pyproject.toml
ARG FAISS_GPU_VERSION=1.14.1.post1
# hadolint ignore=DL3013
RUN pip install '.[gpu,milvus]' \
    && pip uninstall -y faiss-cpu \
    && pip install --force-reinstall --no-deps "faiss-gpu-cu12==${FAISS_GPU_VERSION}"

# ---- runtime images: no compiler, no sources, a non-root user --------------------------------
FROM ${PYTHON_IMAGE} AS runtime-base
RUN groupadd --system --gid 10001 grn \
    && useradd --system --uid 10001 --gid grn --create-home --home-dir /home/grn grn \
    && mkdir -p /data/models /data/index /data/thumbnails /archive \
    && chown -R grn:grn /data
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    GRN_HOST=0.0.0.0 \
    GRN_PORT=8000 \
    GRN_DATABASE_URL=sqlite:////data/grn.db \
    GRN_MODEL_PATH=/data/models/ucm-head/model.safetensors \
    GRN_INDEX_ROOT=/data/index \
    GRN_THUMBNAIL_DIR=/data/thumbnails \
    GRN_ARCHIVE_DIR=/archive
WORKDIR /data
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(f\"http://127.0.0.1:{os.environ.get('GRN_PORT', '8000')}/readyz\", timeout=4)"]
ENTRYPOINT ["grn"]
CMD ["serve"]

FROM runtime-base AS cuda
COPY --from=builder-cuda /opt/venv /opt/venv
USER 10001:10001

FROM runtime-base AS cpu
COPY --from=builder-cpu /opt/venv /opt/venv
USER 10001:10001
