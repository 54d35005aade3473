"""`grn`, the admin command line: database, import, train, evaluate, embed, reindex, serve
and status. A package of thin command groups, one module per topic, over the use cases
(`service.usecases`) and the library functions; settings not given as options come from the
`GRN_` environment variables (service/settings.py).

- `app`: the typer apps, the options several commands share, one-line errors and exit
  codes (0 success, 1 failure, 2 usage), `--json` and table output
- `data`: `grn db`, `import`, `tile`, `assets`
- `export`: `export` (GeoParquet)
- `training`: `train`, `evaluate`, `embed`, `grn model pack` / `unpack`
- `index`: `reindex`, `reconcile`
- `query`: `search`, `classify` (`remote`: the same with --url)
- `concepts`: `grn concept save|list|show|rename|refine|delete` (saved concepts)
- `places`: `same-place`
- `models`: `promote`, `retrain`, `rollback`, `models`
- `serving`: `serve`, `up`, `worker`
- `status`: `status`
- `synth`: `synth`

Each module registers its commands on `app` when imported; none imports torch, FAISS or the
web stack until a command runs."""

from __future__ import annotations

import sys

from service.cli import (
    concepts,
    data,
    export,
    index,
    models,
    places,
    query,
    serving,
    status,
    synth,
    training,
)
from service.cli.app import app

__all__ = [
    "app", "concepts", "data", "export", "index", "main", "models", "places", "query", "serving",
    "status", "synth", "training",
]  # fmt: skip


def main() -> None:  # pragma: no cover - console entry point
    app(sys.argv[1:])
