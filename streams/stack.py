"""The whole pipeline on one machine: a local broker and the real workers as processes.

Used by `intentflow demo` and `intentflow bench e2e`: a Tansu broker (memory storage), the stream
worker (Faust: sampling, dedup, batching, feature writer; Feast with SQLite or Redis online), the
generation worker and the filter worker (in .venv-ml). Every process logs to <data_dir>/logs and
serves Prometheus metrics on its own loopback port. `stop()` ends what `start()` started, in
reverse order; the demo calls it in a `finally`, so Ctrl-C and SIGTERM stop everything too.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from infra import services

ROOT = Path(__file__).resolve().parents[1]
GROUPS = {"stream": "intentflow", "generate": "intentflow-generate", "filter": "intentflow-filter"}


def ml_python() -> str:
    py = os.environ.get("INTENTFLOW_ML_PYTHON", str(ROOT / ".venv-ml" / "bin" / "python"))
    if not Path(py).exists():
        raise RuntimeError(f"{py} not found: build the ML environment with `make venv-ml`")
    return py


@dataclass
class Proc:
    name: str
    argv: list[str]
    log: Path
    ready_marker: bytes
    proc: subprocess.Popen | None = None

    def start(self, env: dict) -> None:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        self._f = open(self.log, "ab")
        self.proc = subprocess.Popen(self.argv, env=env, cwd=ROOT, stdout=self._f, stderr=subprocess.STDOUT,
                                     start_new_session=True)

    def ready(self) -> bool:
        if self.proc.poll() is not None:
            raise RuntimeError(f"{self.name} exited with {self.proc.returncode}; log {self.log}:\n{self.tail()}")
        return self.ready_marker in self.log.read_bytes()

    def tail(self, n: int = 3000) -> str:
        return self.log.read_bytes()[-n:].decode(errors="replace") if self.log.exists() else ""

    def stop(self, timeout: float = 20.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        except ProcessLookupError:
            pass


@dataclass
class Stack:
    data_dir: Path
    env_overrides: dict[str, str] = field(default_factory=dict)
    critic_dir: str | None = None
    online: str = "sqlite"
    broker: str = ""
    web_port: int = 0
    metrics: dict[str, int] = field(default_factory=dict)
    procs: list[Proc] = field(default_factory=list)
    _broker_svc: services.Service | None = None
    _redis_svc: services.Service | None = None

    def env(self, metrics_port: int = 0) -> dict:
        env = {k: v for k, v in os.environ.items() if not k.startswith("INTENTFLOW_")}
        env.update({"INTENTFLOW_BROKER": self.broker, "INTENTFLOW_DATA_DIR": str(self.data_dir),
                    "INTENTFLOW_SESSION_TIMEOUT_S": "6", "INTENTFLOW_FEATURES__ONLINE": self.online,
                    "INTENTFLOW_METRICS_PORT": str(metrics_port), "PYTHONUNBUFFERED": "1",
                    "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "2")})
        if self._redis_svc:
            env["INTENTFLOW_REDIS_PORT"] = str(self._redis_svc.port)
        if self.critic_dir:
            env["INTENTFLOW_FILTER__CRITIC"] = self.critic_dir
        env.update(self.env_overrides)
        return env

    def start(self, wait_ready_s: float = 300.0, progress=None) -> None:
        """Broker (and Redis), then the workers; returns when every worker has its partitions.
        The data dir is emptied first only if a stack made it (it holds MARKER); a folder with
        anything else in it is refused (RuntimeError), never deleted."""
        self.claim_data_dir()
        run = self.data_dir / "run"
        port = services.free_port()
        self._broker_svc = services.broker_up(port, run)
        self.broker = f"127.0.0.1:{port}"
        if self.online == "redis":
            self._redis_svc = services.redis_up(services.free_port(), run)
        from streams.settings import Settings

        s = Settings(broker=self.broker)
        t = s.topics
        from generators.config import MLSettings

        ml = MLSettings().topics
        services.ensure_topics(self.broker, sorted(set(t.model_dump().values()) | set(ml.model_dump().values())),
                               s.partitions, compacted=(ml.tail_stats,))
        self.web_port = services.free_port()
        self.metrics = {name: services.free_port() for name in ("stream", "generate", "filter")}
        logs = self.data_dir / "logs"
        intentflow = str(Path(sys.executable).parent / "intentflow")
        ml = ml_python()
        self.procs = [
            Proc("stream worker", [intentflow, "worker", "--web-port", str(self.web_port)], logs / "stream.log",
                 b"Ready"),
            Proc("generation worker", [ml, "-m", "generators.cli", "worker"], logs / "generate.log", b"assigned"),
            Proc("filter worker", [ml, "-m", "generators.cli", "filter-worker"], logs / "filter.log", b"assigned"),
        ]
        for p, name in zip(self.procs, ("stream", "generate", "filter")):
            p.start(self.env(self.metrics[name]))
        deadline = time.monotonic() + wait_ready_s
        pending = list(self.procs)
        while pending:
            pending = [p for p in pending if not p.ready()]
            if progress:
                progress(f"waiting for {', '.join(p.name for p in pending)}" if pending else "all workers ready")
            if pending and time.monotonic() > deadline:
                raise TimeoutError("not ready: " + "; ".join(f"{p.name} (log {p.log}):\n{p.tail()}" for p in pending))
            time.sleep(0.5)

    MARKER = ".intentflow-stack"

    def claim_data_dir(self) -> None:
        d = self.data_dir
        if d.exists() and any(d.iterdir()):
            if not (d / self.MARKER).exists():
                raise RuntimeError(f"{d} is not empty and was not made by intentflow: refusing to use it "
                                   "(choose an empty or new --data-dir)")
            shutil.rmtree(d)
        d.mkdir(parents=True, exist_ok=True)
        (d / self.MARKER).write_text("made by intentflow (demo / bench e2e); emptied on the next run\n")

    def stop(self) -> None:
        for p in reversed(self.procs):
            p.stop()
        for svc in (self._redis_svc, self._broker_svc):
            if svc:
                services.down(svc)

    def peak_rss_mb(self) -> dict[str, float | None]:
        """Each worker's peak resident memory so far (VmHWM from /proc), in MB; None if gone."""
        out: dict[str, float | None] = {}
        for p in self.procs:
            try:
                status = Path(f"/proc/{p.proc.pid}/status").read_text()
                kb = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:"))
                out[p.name] = round(kb / 1024, 1)
            except (OSError, StopIteration, AttributeError):
                out[p.name] = None
        return out

    def check_alive(self) -> None:
        for p in self.procs:
            if p.proc and p.proc.poll() is not None:
                raise RuntimeError(f"{p.name} exited with {p.proc.returncode}; log {p.log}:\n{p.tail()}")
