"""A real Milvus standalone server (PyPI `milvus` 2.3.5, the server binary it ships) reached
on 127.0.0.1 only: for the tests, the benchmarks and trying the server path on one machine.

    python -m bench.milvus_server --data /tmp/milvus --port 19530    # until Ctrl+C

Milvus 2.3 listens on every interface: its `ip` settings only change the address each
component advertises, and without them the components dial the host's first non-loopback
address. So the server runs in a network namespace of its own (`unshare --net`; root, or
`--map-root-user` where user namespaces are allowed) whose only interface is its loopback:
none of its ports can be reached from outside it. Inside, a relay forwards a Unix socket in
the data directory to the proxy's port; outside, a relay process listens on 127.0.0.1:PORT
and forwards to that socket. Clients use `http://127.0.0.1:PORT`.

The relay outlives the server: `kill()` SIGKILLs the server (the namespace's processes) and
`start()` starts it again over the same data directory behind the same port, the way a
crashed server comes back. The binaries are unpacked once into a cache folder
(`GRN_MILVUS_CACHE`, default ~/.cache/grn/milvus-VERSION).

In a container the container is the namespace: `python -m bench.milvus_server foreground
--data DIR` writes the same configuration and becomes the server, its proxy on port 19530 of
the container's network (the `grn:milvus` image of the Dockerfile, compose's `milvus`
service); `unpack` unpacks the binaries into the cache folder and exits (the image's build).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
import os
import signal
import socket
import struct
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

from bench._common import child_env

PROXY_PORT = 19530
"""The proxy's port inside the namespace (nothing else there can hold it)."""
HEALTH_PORT = 9091
SOCKET_NAME = "proxy.sock"
READY_NAME = "ready"
START_TIMEOUT_S = 120.0
CHUNK = 1 << 16
COMPONENTS = ("rootCoord", "proxy", "queryCoord", "queryNode", "indexNode", "dataCoord", "dataNode")


class MilvusServerError(RuntimeError):
    """The server could not be started (or died while starting): the message says why."""


def cache_dir() -> Path:
    from milvus import __version__

    default = Path.home() / ".cache" / "grn" / f"milvus-{__version__}"
    return Path(os.environ.get("GRN_MILVUS_CACHE", default))


def unpacked_binary() -> Path:
    """The server binary, unpacked from the wheel into the cache folder on first use (a lock
    keeps two processes from unpacking at once; later calls only compare checksums)."""
    from milvus import _initialize_data_files

    cache = cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    with (cache / "lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        _initialize_data_files(str(cache))
    return cache / "bin" / "milvus"


# --- relays -------------------------------------------------------------------------------


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError, OSError):
        while data := await reader.read(CHUNK):
            writer.write(data)
            await writer.drain()
    writer.close()


async def _join(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    far: asyncio.Future[tuple[asyncio.StreamReader, asyncio.StreamWriter]],
) -> None:
    """Join a connection to one opened to the far side; when that cannot be opened (the
    server is down), the client's connection is closed, which it sees as a reset."""
    try:
        far_reader, far_writer = await far
    except OSError:
        writer.close()
        return
    await asyncio.gather(_pipe(reader, far_writer), _pipe(far_reader, writer))


async def _relay_to_socket(port: int, path: Path, announce: bool) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _join(reader, writer, asyncio.ensure_future(asyncio.open_unix_connection(path)))

    server = await asyncio.start_server(handle, "127.0.0.1", port)
    if announce:
        print(server.sockets[0].getsockname()[1], flush=True)
    await server.serve_forever()


async def _relay_to_proxy(path: Path) -> asyncio.Server:
    """The relay from the Unix socket to the proxy, listening when this returns."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        far = asyncio.ensure_future(asyncio.open_connection("127.0.0.1", PROXY_PORT))
        await _join(reader, writer, far)

    path.unlink(missing_ok=True)
    return await asyncio.start_unix_server(handle, path)


# --- inside the namespace -----------------------------------------------------------------


def loopback_up() -> None:
    """Bring up `lo`, the new namespace's one interface (down when it is made)."""
    get_flags, set_flags, up = 0x8913, 0x8914, 0x1  # SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        request = struct.pack("16sH14x", b"lo", 0)
        flags = struct.unpack("16sH14x", fcntl.ioctl(sock, get_flags, request))[1]
        fcntl.ioctl(sock, set_flags, struct.pack("16sH14x", b"lo", flags | up))


def write_config(data: Path) -> None:
    """configs/milvus.yaml from the wheel's template: its data, logs, write-ahead log and
    etcd under `data`, every component advertising 127.0.0.1."""
    from milvus import MilvusServerConfig

    config = MilvusServerConfig(data_dir=str(data), proxy_port=PROXY_PORT)
    for component in COMPONENTS:
        config.set(f"{component}.ip", "127.0.0.1")
    config.resolve()


def healthy(timeout_s: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(
            f"http://127.0.0.1:{HEALTH_PORT}/healthz", timeout=timeout_s
        ) as answer:
            return b"OK" in answer.read()
    except OSError:
        return False


def configured_server(data: Path) -> tuple[list[str], dict[str, str]]:
    """The configuration written into `data`, then the server's command line and
    environment (run in `data`)."""
    write_config(data)
    binary = unpacked_binary()
    env = {
        **os.environ,
        "DEPLOY_MODE": "STANDALONE",
        "METRICS_PORT": str(HEALTH_PORT),
        "MILVUS_RUN_DIR": str(data / "run"),
        "LD_LIBRARY_PATH": f"{binary.parent}:{os.environ.get('LD_LIBRARY_PATH', '')}",
    }
    return [str(binary), "run", "standalone"], env


def run_in_foreground(data: Path) -> NoReturn:
    """Become the server over `data` (a container's entry point: the container's network is
    its namespace; its log goes to standard output)."""
    command, env = configured_server(data)
    os.chdir(data)
    os.execve(command[0], command, env)


def run_inside(data: Path) -> int:
    """In the namespace: the server, then the relay from the Unix socket once it is healthy.
    Exits when the server does (with its status); SIGTERM stops the server first."""
    loopback_up()
    command, env = configured_server(data)
    (data / READY_NAME).unlink(missing_ok=True)
    with (data / "logs" / "milvus.log").open("a") as log:
        server = subprocess.Popen(command, cwd=data, env=env, stdout=log, stderr=subprocess.STDOUT)
    signal.signal(signal.SIGTERM, lambda *_: server.terminate())
    deadline = time.monotonic() + START_TIMEOUT_S
    while not healthy() and server.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    if server.poll() is not None or not healthy():
        server.kill()
        return server.wait() or 1

    async def serve() -> int:
        relay = await _relay_to_proxy(data / SOCKET_NAME)
        (data / READY_NAME).write_text(str(server.pid))
        status = await asyncio.to_thread(server.wait)
        relay.close()
        return status

    return asyncio.run(serve())


# --- outside: the server as a whole -------------------------------------------------------


class MilvusServer:
    """The server in its namespace behind a relay on 127.0.0.1: `start()`, `kill()`,
    `start()` again, `stop()`. `uri` is what clients connect to."""

    def __init__(self, data: Path, port: int = 0) -> None:
        self.data = Path(data).resolve()
        self.data.mkdir(parents=True, exist_ok=True)
        self.relay = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bench.milvus_server",
                "relay",
                "--data",
                str(self.data),
                "--port",
                str(port),
            ],
            stdout=subprocess.PIPE,
            text=True,
            start_new_session=True,
            env=child_env(),
        )
        assert self.relay.stdout is not None
        line = self.relay.stdout.readline().strip()
        if not line.isdigit():
            self.relay.kill()
            raise MilvusServerError(f"the relay to the Milvus server did not start ({line!r})")
        self.port = int(line)
        self.uri = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def log(self) -> Path:
        return self.data / "logs" / "milvus.log"

    @property
    def server_pid(self) -> int:
        """The Milvus binary's process id (written when it is healthy)."""
        return int((self.data / READY_NAME).read_text())

    def start(self, timeout_s: float = START_TIMEOUT_S) -> MilvusServer:
        """Start the server (over whatever the data directory holds) and wait until it
        answers through the relay."""
        (self.data / READY_NAME).unlink(missing_ok=True)
        (self.data / "logs").mkdir(exist_ok=True)
        command = ["unshare", "--net"] + (["--map-root-user"] if os.geteuid() else [])
        with (self.data / "logs" / "inside.log").open("a") as log:
            self.process = subprocess.Popen(
                [
                    *command,
                    sys.executable,
                    "-m",
                    "bench.milvus_server",
                    "inside",
                    "--data",
                    str(self.data),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env=child_env(),
            )
        deadline = time.monotonic() + timeout_s
        while not (self.data / READY_NAME).exists():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.kill()
                inside = (self.data / "logs" / "inside.log").read_text()[-2000:]
                raise MilvusServerError(
                    f"the Milvus server in {self.data} did not start (a network namespace "
                    f"needs root or user namespaces):\n{inside}"
                )
            time.sleep(0.1)
        return self

    def kill(self) -> None:
        """SIGKILL the server and everything in its namespace, as a crash would."""
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
            self.process = None

    def stop(self, grace_s: float = 10.0) -> None:
        """Stop the server (SIGTERM: it flushes; SIGKILL after `grace_s`) and the relay."""
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                self.kill()
            self.process = None
        self.relay.kill()
        self.relay.wait()

    def __enter__(self) -> MilvusServer:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *_: object) -> None:
        self.stop()


@contextlib.contextmanager
def milvus_server(data: Path, port: int = 0) -> Iterator[MilvusServer]:
    """A started server over `data`, stopped (with its relay) on the way out."""
    with MilvusServer(data, port) as server:
        yield server


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    roles = ["serve", "relay", "inside", "foreground", "unpack"]
    parser.add_argument("role", nargs="?", default="serve", choices=roles)
    parser.add_argument("--data", type=Path, help="the server's data folder")
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0: a free one)")
    args = parser.parse_args(argv)
    if args.role == "unpack":
        print(unpacked_binary())
        return 0
    if args.data is None:
        parser.error(f"{args.role} needs --data")
    data = args.data.resolve()
    if args.role == "foreground":
        data.mkdir(parents=True, exist_ok=True)
        run_in_foreground(data)
    if args.role == "inside":
        return run_inside(data)
    if args.role == "relay":
        asyncio.run(_relay_to_socket(args.port, data / SOCKET_NAME, announce=True))
        return 0
    with milvus_server(data, args.port) as server:
        print(f"Milvus server at {server.uri} (data {data}); Ctrl+C stops it", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            while server.process is not None and server.process.poll() is None:
                time.sleep(0.5)
    return 0


if __name__ == "__main__":
    sys.exit(main())
