"""The Milvus server of the tests and benchmarks (`bench.milvus_server`): every port it
listens on is in a network namespace whose one interface is its loopback, the one way in
is the relay on 127.0.0.1, and a killed server comes back over its data behind the same
port."""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("milvus")
pytest.importorskip("pymilvus")

from bench.milvus_server import MilvusServer
from index.filters import SceneMeta
from index.stores.base import VectorStoreUnavailableError
from index.stores.milvus_client import milvus_answering
from index.stores.milvus_collection import MilvusCollection

LISTEN = "0A"


def listeners(table_dir: str) -> dict[int, tuple[str, int]]:
    """The listening TCP sockets of a network namespace: inode -> (address hex, port)."""
    found = {}
    for name in ("tcp", "tcp6"):
        for line in Path(table_dir, name).read_text().splitlines()[1:]:
            fields = line.split()
            address, port = fields[1].split(":")
            if fields[3] == LISTEN:
                found[int(fields[9])] = (address, int(port, 16))
    return found


def socket_inodes(pid: int) -> set[int]:
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        link = os.readlink(fd)
        if match := re.fullmatch(r"socket:\[(\d+)\]", link):
            inodes.add(int(match.group(1)))
    return inodes


def is_loopback(address: str) -> bool:
    if len(address) == 8:  # IPv4, little-endian hex: 127.x.x.x ends in 7F
        return address.endswith("7F")
    return address == "00000000000000000000000001000000"  # ::1


def test_the_server_is_reached_on_loopback_only(milvus_server: MilvusServer) -> None:
    pid = milvus_server.server_pid
    inside = listeners(f"/proc/{pid}/net")
    own = socket_inodes(pid) & set(inside)
    ports = {inside[i][1] for i in own}
    assert {19530, 9091} <= ports and len(own) >= 8  # proxy, metrics, coordinators, nodes
    # Milvus listens on every interface of its namespace, and that namespace has only `lo`
    assert any(not is_loopback(inside[i][0]) for i in own)
    interfaces = [
        line.split(":")[0].strip()
        for line in Path(f"/proc/{pid}/net/dev").read_text().splitlines()[2:]
    ]
    assert interfaces == ["lo"]
    # none of its sockets is in this namespace; the relay's one listener is on 127.0.0.1
    host = listeners("/proc/self/net")
    assert not own & set(host)
    relayed = socket_inodes(milvus_server.relay.pid) & set(host)
    assert [host[i] for i in relayed] == [("0100007F", milvus_server.port)]


@pytest.mark.engines
def test_a_killed_server_comes_back_with_its_data(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    vectors = rng.normal(size=(300, 8)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    ids = np.arange(1, 301, dtype=np.int64)
    with MilvusServer(tmp_path / "milvus") as server:
        port = server.port
        stored = MilvusCollection(server.uri, "kept", 8, "m1")
        stored.add(ids, vectors, [SceneMeta(labels=("a",), folder="f")] * len(ids))
        stored.client.flush("kept")  # what is acknowledged and flushed survives a SIGKILL
        assert stored.count() == 300
        server.kill()
        with (
            pytest.raises(VectorStoreUnavailableError, match=server.uri),
            milvus_answering(server.uri),
        ):
            stored.search(vectors[:1], 5)
        server.start()
        assert server.port == port
        again = MilvusCollection(server.uri, "kept", None, "m1")
        assert again.count() == 300
        np.testing.assert_array_equal(again.ids(), ids)
        assert again.search(vectors[:1], 1).ids[0, 0] == 1
