"""A Ray cluster of several nodes on this one host, for tests, benchmarks and trying
`--ray-address`: a head and N worker nodes, each a `ray start --block` process in its own
session, all on 127.0.0.1 with ports picked free, under a temporary folder. A node is
stopped or killed by the process ids of its tree, never with `ray stop` (which ends every
Ray process of the machine, other users' included).

    python -m index.ray_cluster --workers 2      # prints the address; Ctrl-C stops it

Each node offers `cpus` logical CPUs (2 by default) and a small object store, so three nodes
fit a small machine; the nodes share the host's cores, so they model a cluster's
scheduling and failures, not its speed.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

HOST = "127.0.0.1"
WORKER_PORTS = 24
"""Ports each node's Ray worker processes may listen on (one per worker process)."""
RAY_START = (
    "import sys, ray._private.services as s; s.resolve_ip_for_localhost = lambda host: host; "
    "from ray.scripts.scripts import main; sys.argv[0] = 'ray'; main()"
)
"""`ray start` keeping a loopback --node-ip-address and --address as given (see
`keep_loopback`): its servers then listen on 127.0.0.1 only."""


def keep_loopback() -> None:
    """Make Ray in this process keep loopback addresses as given. Ray (2.60 here) replaces a
    node or head address of 127.0.0.1 with the machine's outward address
    (`services.resolve_ip_for_localhost`): `ray start --node-ip-address=127.0.0.1` then
    listens on every interface and registers the outward address, and a driver given
    127.0.0.1:PORT dials the outward one, where a loopback-only cluster does not answer."""
    from ray._private import services

    if hasattr(services, "resolve_ip_for_localhost"):
        services.resolve_ip_for_localhost = lambda host: host


def is_loopback(address: str) -> bool:
    """Whether a Ray address (`host:port`, `ray://host:port`) names this host's loopback."""
    host = address.removeprefix("ray://").rpartition(":")[0].strip("[]")
    return host in ("localhost", "::1") or host.startswith("127.")


def free_ports(count: int) -> list[int]:
    """`count` distinct ports free on 127.0.0.1 (bound to port 0, then released)."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind((HOST, 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def descendants(pid: int) -> list[int]:
    """`pid` and every process below it, from /proc (parents first)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            stat = (entry / "stat").read_text()
            parent = int(stat[stat.rindex(")") + 2 :].split()[1])
            children.setdefault(parent, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        current = todo.pop(0)
        found.append(current)
        todo.extend(children.get(current, []))
    return found


def naming(folder: Path) -> list[int]:
    """Processes whose command line names `folder` (a node's raylet and agents name its
    session folder): what a `ray start` that exited may have left behind."""
    needle = f"{folder}/".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            with contextlib.suppress(OSError):
                if needle in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
    return found


def listening_sockets(pids: set[int]) -> list[tuple[str, int, int]]:
    """(address, port, pid) of each TCP socket in LISTEN state that these processes hold,
    from /proc/net/tcp and tcp6 and each process's open files."""
    inodes: dict[str, int] = {}
    for pid in pids:
        with contextlib.suppress(OSError):
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                with contextlib.suppress(OSError):
                    target = os.readlink(fd)
                    if target.startswith("socket:["):
                        inodes[target[8:-1]] = pid
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                parts = line.split()
                if parts[3] != "0A" or parts[9] not in inodes:  # 0A: LISTEN
                    continue
                address, port = parts[1].split(":")
                found.append((_address(address), int(port, 16), inodes[parts[9]]))
    return sorted(found)


def _address(hexed: str) -> str:
    """An address of /proc/net/tcp[6] (little-endian 32-bit words) in words."""
    raw = bytes.fromhex(hexed)
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    if len(words) == 4:
        return socket.inet_ntop(socket.AF_INET, words)
    return socket.inet_ntop(socket.AF_INET6, words)


class NodeExitedError(RuntimeError):
    """A node's `ray start` exited before the node was alive."""


@dataclass
class RayNode:
    name: str
    process: subprocess.Popen[bytes]
    folder: Path

    @property
    def log(self) -> Path:
        return self.folder / "ray-start.log"

    def pids(self) -> list[int]:
        alive = descendants(self.process.pid) if self.process.poll() is None else []
        return sorted(set(alive) | set(naming(self.folder)))


@dataclass
class LocalRayCluster:
    """A head and `workers` worker nodes on 127.0.0.1 (`start()`, or `with`)."""

    workers: int = 2
    cpus: int = 2
    """Logical CPUs each node offers Ray's scheduler (an embedding actor takes one, each
    decoding or writing task one)."""
    object_store_mb: int = 128
    root: Path | None = None
    """Where the nodes' session folders go (a new temporary folder, removed at `stop()`)."""
    nodes: list[RayNode] = field(default_factory=list)
    address: str = ""
    """The head's GCS, `127.0.0.1:PORT`: what --ray-address and GRN_RAY_ADDRESS take."""
    port: int = 0
    _owned_root: bool = False

    def start(self, timeout: float = 120.0) -> LocalRayCluster:
        """Start the head, then the workers one at a time (less contention); return when
        all nodes are alive in the GCS."""
        if self.root is None:
            self.root = Path(tempfile.mkdtemp(prefix="ray-", dir="/tmp"))  # short: socket paths
            self._owned_root = True
        try:
            for number in range(self.workers + 1):
                self._start_alive(number, timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _start_node(self, name: str, role: list[str], folder_name: str = "") -> None:
        assert self.root is not None
        ports = free_ports(7 + WORKER_PORTS)
        folder = self.root / (folder_name or name)
        folder.mkdir(parents=True, exist_ok=True)
        command = [
            sys.executable, "-c", RAY_START, "start", "--block", *role, f"--node-ip-address={HOST}",
            f"--temp-dir={folder}", f"--num-cpus={self.cpus}", "--num-gpus=0",
            f"--object-store-memory={self.object_store_mb * 2**20}",
            "--disable-usage-stats",
            f"--node-manager-port={ports[0]}", f"--object-manager-port={ports[1]}",
            f"--metrics-export-port={ports[2]}", f"--dashboard-agent-listen-port={ports[3]}",
            f"--dashboard-agent-grpc-port={ports[4]}", f"--runtime-env-agent-port={ports[5]}",
            f"--worker-port-list={','.join(map(str, ports[7:]))}",
        ]  # fmt: skip
        log = folder / "ray-start.log"
        # the head's autoscaler monitor serves its metrics on 44217 unless told otherwise
        metrics = {"AUTOSCALER_METRIC_PORT": str(ports[6])}
        # Ray 2.60 turns token authentication on where ~/.ray/auth_token exists (any local
        # ray.init() writes one); this loopback-only cluster is started without it, so that
        # its state does not depend on what other processes left in the home folder
        env = os.environ | {"RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"} | metrics
        env.pop("RAY_ADDRESS", None)
        with log.open("wb") as out:
            process = subprocess.Popen(
                command, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )
        self.nodes.append(RayNode(name, process, folder))

    def _start_alive(self, number: int, timeout: float, tries: int = 3) -> None:
        """Start node `number` (0: the head) and wait until it is alive. `ray start` gives a
        node 30 s to register with the GCS (a constant in Ray); on a loaded machine it can
        miss that and exit, so a node that exited is started again, up to `tries` times,
        in a fresh folder (none of the last try's sockets) and, the head, on fresh ports."""
        name = f"worker{number}" if number else "head"
        for attempt in range(1, tries + 1):
            role = [f"--address={self.address}"]
            if not number:
                gcs, client = free_ports(2)
                self.port, self.address = gcs, f"{HOST}:{gcs}"
                role = ["--head", f"--port={gcs}", f"--ray-client-server-port={client}",
                        "--include-dashboard=false"]  # fmt: skip
            self._start_node(name, role, f"{name}-{attempt}")
            try:
                self.wait_for_nodes(number + 1, timeout)
                return
            except NodeExitedError:
                if attempt == tries:
                    raise
                _signal(self.nodes.pop().pids(), signal.SIGKILL)  # what it left
                print(f"Ray node {name} missed its start, starting it again", file=sys.stderr)

    def alive_nodes(self) -> int:
        """Nodes the GCS counts as alive."""
        from ray._raylet import GcsClient  # type: ignore[attr-defined]

        infos = GcsClient(address=self.address).get_all_node_info(timeout=5)
        return sum(1 for info in infos.values() if info.state == 0)  # 0: ALIVE

    def wait_for_nodes(self, count: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            for node in self.nodes:
                if node.process.poll() is not None:
                    raise NodeExitedError(
                        f"Ray node {node.name} exited ({node.process.returncode}): "
                        f"{node.log.read_text()[-2000:]}"
                    )
            with contextlib.suppress(Exception):  # the GCS may not answer yet
                socket.create_connection((HOST, self.port), timeout=1).close()
                if self.alive_nodes() >= count:
                    return
            if time.monotonic() > deadline:
                raise TimeoutError(f"{count} Ray nodes not alive after {timeout:.0f} s")
            time.sleep(0.5)

    def kill(self, number: int) -> list[int]:
        """SIGKILL worker node `number` (1..workers) and every process below it, as a
        machine that dies would; returns the process ids killed."""
        node = self.nodes[number]
        pids = node.pids()
        _signal(pids, signal.SIGKILL)
        node.process.wait()
        return pids

    def pids(self) -> set[int]:
        return {pid for node in self.nodes for pid in node.pids()}

    def listening(self) -> list[tuple[str, int, int]]:
        """The TCP ports the cluster's processes listen on: (address, port, pid)."""
        return listening_sockets(self.pids())

    def stop(self, grace: float = 15.0) -> None:
        """Worker nodes first, then the head: SIGTERM to each `ray start --block` (which
        stops its node's processes), then SIGKILL to whatever of the tree is left."""
        for node in reversed(self.nodes):
            pids = node.pids()
            if node.process.poll() is None:
                node.process.terminate()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    node.process.wait(grace)
            _signal(pids, signal.SIGKILL)  # those still alive: the tree as it was
            if node.process.poll() is None:
                node.process.wait()
        self.nodes.clear()
        if self._owned_root and self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> LocalRayCluster:
        return self.start()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.stop()


def _signal(pids: list[int], sig: signal.Signals) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=2, help="Worker nodes beside the head.")
    parser.add_argument("--cpus", type=int, default=2, help="Logical CPUs per node.")
    parser.add_argument("--object-store-mb", type=int, default=128)
    args = parser.parse_args()
    cluster = LocalRayCluster(args.workers, args.cpus, args.object_store_mb)
    stops = {signal.SIGINT, signal.SIGTERM}
    signal.pthread_sigmask(signal.SIG_BLOCK, stops)  # taken by sigwait below
    with cluster:
        print(f"Ray cluster of {args.workers + 1} nodes at {cluster.address} (in {cluster.root})")
        print(f"  grn reindex --ray-address {cluster.address} --workers N ...", flush=True)
        for address, port, pid in cluster.listening():
            print(f"  listening: {address}:{port} (pid {pid})")
        signal.sigwait(stops)


if __name__ == "__main__":
    main()
