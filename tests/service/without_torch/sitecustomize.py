"""Put first on PYTHONPATH, this makes a Python process one where torch is not installed,
as in the serving image: importing torch, torchvision or timm fails with ImportError. Each
refused import is appended to the file GRN_TEST_REFUSED_IMPORTS names, so that a test can
tell the process tried and went on without it."""

from __future__ import annotations

import os
import sys
from typing import Any

REFUSED = ("torch", "torchvision", "timm", "functorch", "triton")


class RefuseTorch:
    def find_spec(self, name: str, path: Any = None, target: Any = None) -> None:
        if name.split(".")[0] not in REFUSED:
            return None
        record = os.environ.get("GRN_TEST_REFUSED_IMPORTS")
        if record:
            with open(record, "a") as handle:
                handle.write(f"{os.getpid()} {name}\n")
        raise ImportError(f"No module named {name!r} (refused: a serving install has no torch)")


sys.meta_path.insert(0, RefuseTorch())
