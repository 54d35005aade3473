"""The disk cache of rendered JPEGs (thumbnails and previews), kept within a budget of bytes
and files: when a new rendering would take the folder past either, the least recently used
files go first, down to nine tenths of the budget so that eviction runs once per tenth of it,
not once per write.

Recency is each file's modification time: a hit touches its file. The total is counted by
walking the folder when the cache is first used and after each eviction, and kept up to date
by this process's own writes in between. One process therefore never leaves more than the
budget on disk. Several processes sharing a folder (`grn serve --workers N`) each also walk it
again after writing a tenth of the budget, so the folder stays within the budget plus a tenth
of it for each further process.
"""

from __future__ import annotations

import contextlib
import os
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path

LOW_WATER = 0.9
"""Eviction frees the cache down to this share of its budget (bytes and files)."""


@dataclass(frozen=True)
class CacheUsage:
    """What a cache folder holds."""

    bytes: int
    files: int


def _walk(root: Path) -> list[tuple[float, int, Path]]:
    """(modification time, size, path) of every file under `root`."""
    found: list[tuple[float, int, Path]] = []
    pending = [root]
    while pending:
        folder = pending.pop()
        with contextlib.suppress(OSError), os.scandir(folder) as entries:
            for entry in entries:
                with contextlib.suppress(OSError):  # gone meanwhile: another process evicted it
                    if entry.is_dir(follow_symlinks=False):
                        pending.append(Path(entry.path))
                    elif entry.is_file(follow_symlinks=False):
                        stat = entry.stat(follow_symlinks=False)
                        found.append((stat.st_mtime, stat.st_size, Path(entry.path)))
    return found


def usage(root: Path) -> CacheUsage:
    """The bytes and files under `root` now (nothing when it does not exist)."""
    files = _walk(root)
    return CacheUsage(sum(size for _, size, _ in files), len(files))


class RenderCache:
    """JPEG renderings on disk under `root` (names relative to it), at most `max_bytes` and
    `max_files` in all. Reads and writes never raise for the disk: a cache that cannot be
    read or written only costs speed."""

    def __init__(self, root: Path, max_bytes: int, max_files: int) -> None:
        self.root = root
        self.max_bytes = max_bytes
        self.max_files = max_files
        self._lock = threading.Lock()
        self._counted: CacheUsage | None = None
        self._written_since_walk = 0
        self.evicted = 0
        """Files this process removed to keep within the budget."""

    @property
    def current(self) -> CacheUsage:
        """The bytes and files held, as this process counts them (walking the folder the
        first time)."""
        with self._lock:
            return self._count()

    def counted(self, unit: str) -> float:
        """The "bytes" or "files" last counted, without walking the folder (NaN before the
        first count)."""
        counted = self._counted
        return float("nan") if counted is None else float(getattr(counted, unit))

    def get(self, name: str) -> bytes | None:
        """The cached bytes, marked as just used; None when absent."""
        path = self.root / name
        try:
            data = path.read_bytes()
        except OSError:
            return None
        with contextlib.suppress(OSError):
            os.utime(path)  # the least recently *used* goes first, not the oldest written
        return data

    def put(self, name: str, data: bytes) -> None:
        """Keep `data` as `name`, first evicting what the budget needs. Data larger than
        the whole budget is not kept."""
        if len(data) > self.max_bytes or self.max_files < 1:
            return
        path = self.root / name
        with self._lock:
            counted = self._count()
            too_full = (
                counted.bytes + len(data) > self.max_bytes
                or counted.files + 1 > self.max_files
                or self._written_since_walk > self.max_bytes * (1 - LOW_WATER)
            )
            if too_full:
                self._evict(len(data))
            with contextlib.suppress(OSError):
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}")
                tmp.write_bytes(data)
                replaced = path.exists()
                tmp.replace(path)
                if not replaced:  # another thread or process may have written it first
                    counted = self._count()
                    self._counted = CacheUsage(counted.bytes + len(data), counted.files + 1)
                    self._written_since_walk += len(data)

    def _count(self) -> CacheUsage:
        if self._counted is None:
            self._counted = usage(self.root)
            self._written_since_walk = 0
        return self._counted

    def _evict(self, incoming: int) -> None:
        """Remove the least recently used files until `incoming` bytes and one file fit
        below the low-water mark (the lock is held)."""
        files = sorted(_walk(self.root))
        total, count = sum(size for _, size, _ in files), len(files)
        byte_goal = self.max_bytes * LOW_WATER - incoming
        file_goal = self.max_files * LOW_WATER - 1
        for _, size, path in files:
            if total <= byte_goal and count <= file_goal:
                break
            try:
                path.unlink()
            except FileNotFoundError:
                pass  # another process evicted it
            except OSError:
                continue
            else:
                self.evicted += 1
            total, count = total - size, count - 1
        self._counted = CacheUsage(max(total, 0), max(count, 0))
        self._written_since_walk = 0
