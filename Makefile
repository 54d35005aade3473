# Set-up and everyday commands. `make run` and `make test` work on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
UCM ?= ../shared/datasets/ucm-multilabel
RUN ?= runs/ucm-head
DATA ?= data
GRN := $(VENV)/bin/grn

# The service's settings (see the README's table); the environment overrides them.
export GRN_DATABASE_URL ?= sqlite:///$(DATA)/grn.db
export GRN_MODEL_PATH ?= $(RUN)/model.safetensors
export GRN_INDEX_ROOT ?= $(DATA)/index
export GRN_THUMBNAIL_DIR ?= $(DATA)/thumbnails
# the archive served, which the admin page's Import (POST /admin/import) imports again
export GRN_ARCHIVE_DIR ?= $(abspath $(UCM))

.PHONY: install lock run serve-prepare train evaluate test test-engines lint typecheck bench bench-service clean \
	images compose-smoke cluster-smoke scale

install: $(VENV)/.installed

# The locked dev set (requirements/dev.lock: every package pinned, its hashes checked), then
# the project itself, editable and without dependencies. A lock older than pyproject.toml's
# dependencies is refused first: `make lock` writes the locks again.
LOCK ?= requirements/dev.lock
$(VENV)/.installed: pyproject.toml $(LOCK)
	$(PYTHON) requirements/lock.py check
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet --require-hashes --requirement $(LOCK)
	$(PY) -m pip install --quiet --no-deps -e .
	$(PY) -m pip check
	$(VENV)/bin/grn assets || echo "warning: the web page's map library is not installed (see above); the page works without the map"
	touch $@

# Serve the UCM archive at http://127.0.0.1:8000 on the embedded defaults (SQLite,
# faiss-cpu). The first run migrates the database, imports the archive, rebuilds the default
# head-mode model from its shipped heads (model/defaults/, with the backbone weights pip
# installed; it trains one, about 5 min on 2 cores, when those weights differ) and builds the
# index; later runs find them done. `make train` retrains it.
run: serve-prepare
	$(GRN) serve

serve-prepare: install $(RUN)/model.safetensors
	$(GRN) db upgrade
	$(GRN) import $(UCM) --quiet
	$(GRN) reindex --model $(RUN) --archive $(UCM) --index-root $(GRN_INDEX_ROOT) --if-stale --quiet

DEFAULT_HEADS ?= model/defaults/ucm-head.heads.safetensors

$(RUN)/model.safetensors: | install
	$(GRN) model unpack $(DEFAULT_HEADS) --out $(RUN) \
		|| $(GRN) train --archive $(UCM) --out $(RUN) --mode head

# Train (or resume training) on the UCM archive in head mode.
train: install
	$(GRN) train --archive $(UCM) --out $(RUN) --mode head

evaluate: install
	$(GRN) evaluate --model $(RUN) --archive $(UCM) --out $(RUN)/eval

# Resolve the locked sets (requirements/*.lock: dev, serve, train, cuda) again from
# pyproject.toml with uv, keeping today's pins where they still fit (PyPI; seconds).
# LOCK_ARGS="--upgrade" moves every pin to the newest release allowed,
# LOCK_ARGS="--upgrade-package NAME" that package's.
UV ?= $(VENV)/bin/uv
lock:
	test -x $(UV) || { $(PYTHON) -m venv $(VENV) && $(PY) -m pip install --quiet uv; }
	$(PYTHON) requirements/lock.py write $(UV) $(LOCK_ARGS)

# the locks against pyproject.toml (no network), ruff, then the import contracts of
# pyproject.toml: model <- index <- service, the service's layers (cli, api > jobs >
# usecases > storage, runtime) and no import cycles
lint: install
	$(PYTHON) requirements/lock.py check
	$(VENV)/bin/ruff check model index service migrations tests bench requirements
	$(VENV)/bin/lint-imports

typecheck: install
	$(VENV)/bin/mypy

# The test modules on TEST_WORKERS processes (pytest-xdist; a module's tests stay together on
# one, so its servers start once): 30 min instead of 43 on this 2-core machine (docs/ci.md).
# TEST_WORKERS=0 runs them in this process, one after another.
TEST_WORKERS ?= 2
test: lint typecheck
	$(PY) -m pytest -m "not engines" -n $(TEST_WORKERS) --dist loadfile

# The fault runs on real engines, minutes each (pyproject's `engines` marker): a worker
# node of a three-node Ray cluster SIGKILLed mid-run (tests/index/test_ray_cluster.py), the
# Milvus standalone server SIGKILLed under the service and under its harness, then restarted
# (tests/service/test_milvus_faults.py, tests/bench/test_milvus_server.py); and the serving
# set installed alone from requirements/serve.lock, then searched (test_serve_install.py).
test-engines: install
	$(PY) -m pytest -m engines

bench: install
	$(PY) -m bench.throughput --archive $(UCM)

# The whole service at archive scale (issue 36), sizes 2,100, 10k, 100k and N side by side,
# on SQLite and on the PostgreSQL at SCALE_POSTGRES: synthetic archives (kept in SCALE_WORK),
# bulk imports, then a server's figures (docs/scaling.md, "The service at a million scenes").
N ?= 200000
SCALE_WORK ?= /tmp/grn-scale
SCALE_POSTGRES ?= postgresql://postgres@127.0.0.1:5432/test
scale: install $(RUN)/model.safetensors
	$(PY) -m bench.scale --scenes $(N) --model $(RUN)/model.safetensors --work $(SCALE_WORK) \
		--postgres $(SCALE_POSTGRES) --out docs/results/scale-$(N).json

# The Docker engine and compose v2 (installed and started when missing), the base images
# (made from Debian packages when missing) and the CPU image grn:cpu (docs/deploy.md). Root or
# sudo; Debian bookworm.
images:
	docker/engine.sh >/dev/null
	docker/base-images.sh
	docker/build.sh

# `docker compose up` for real over a small UCM archive, checked through the published port,
# then torn down (`down -v`): docker/smoke.sh says what it checks.
compose-smoke:
	UCM=$(UCM) docker/smoke.sh

# The compose `cluster` profile for real: two API replicas and two workers over one PostgreSQL
# and one Milvus server behind nginx, a worker and a replica killed on purpose, then torn down
# (docker/cluster-smoke.sh says what it checks). Uses the images compose-smoke built.
cluster-smoke:
	UCM=$(UCM) docker/cluster-smoke.sh

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
