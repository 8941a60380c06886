"""The whole pipeline on one machine: a local broker and the real workers as processes.

Used by `intentflow demo`, `intentflow bench e2e` and `intentflow bench faults`: a Tansu broker
(memory storage), the stream worker (Faust: sampling, dedup, batching, feature writer; Feast with
SQLite or Redis online), the generation worker and the filter worker (in .venv-ml); with
`engine="openai"` the model runs in its own `vllm serve` process (the engine server) and the
generation worker talks to it over HTTP. Every process logs to <data_dir>/logs and serves
Prometheus metrics on its own loopback port. `stop()` ends what `start()` started, in reverse
order; the demo calls it in a `finally`, so Ctrl-C and SIGTERM stop everything too. For fault
runs, `kill(key)` ends one process ("stream", "generate", "filter", "engine") with SIGKILL,
`restart(key)` starts it again as it was, and `stop_redis()` / `start_redis()` take the online
store down and back with its data.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from infra import procs, services

ROOT = Path(__file__).resolve().parents[1]
MACHINE_SETTINGS = ("INTENTFLOW_ML_CACHE", "INTENTFLOW_DTYPE", "INTENTFLOW_ML_PYTHON")  # passed to the workers


def ml_python() -> str:
    py = os.environ.get("INTENTFLOW_ML_PYTHON", str(ROOT / ".venv-ml" / "bin" / "python"))
    if not Path(py).exists():
        raise RuntimeError(f"{py} not found: build the ML environment with `make venv-ml`")
    return py


def bootstrap_models() -> None:
    """The bundled SmolLM2 in this CPU's dtype and the default critic, made once and cached
    (`generators.cli bootstrap`; a second call does nothing): the workers refuse to start without."""
    subprocess.run([ml_python(), "-m", "generators.cli", "bootstrap"], cwd=ROOT, check=True, stdout=subprocess.DEVNULL)


@dataclass
class Proc:
    name: str
    argv: list[str]
    log: Path
    ready_marker: bytes
    key: str = ""  # "stream", "generate", "filter", "engine": its metrics port and Stack.kill/restart
    proc: subprocess.Popen | None = None
    _log_from: int = 0  # where this run's lines start in the log (a restart appends)

    def start(self, env: dict) -> None:
        self._log_from = self.log.stat().st_size if self.log.exists() else 0  # a restart appends
        self.proc = procs.spawn(self.argv, self.log, env=env, cwd=ROOT)

    def ready(self) -> bool:
        """Whether this run (since the last start) has logged its ready marker; raises if it exited."""
        if self.proc.poll() is not None:
            raise RuntimeError(f"{self.name} exited with {self.proc.returncode}; log {self.log}:\n{self.tail()}")
        with open(self.log, "rb") as f:
            f.seek(self._log_from)
            return self.ready_marker in f.read()

    def kill(self) -> None:
        """SIGKILL to the process and everything it started (its session), as a crash would."""
        procs.kill(self.proc)

    def tail(self, n: int = 3000) -> str:
        return self.log.read_bytes()[-n:].decode(errors="replace") if self.log.exists() else ""

    def stop(self, timeout: float = 20.0) -> None:
        procs.stop(self.proc, timeout)


@dataclass
class Stack:
    data_dir: Path
    env_overrides: dict[str, str] = field(default_factory=dict)
    critic_dir: str | None = None
    online: str = "sqlite"
    engine: str = "vllm"  # "vllm": in the generation worker; "openai": a `vllm serve` process the worker calls
    broker: str = ""
    web_port: int = 0
    engine_port: int = 0  # the engine server's HTTP port (engine="openai")
    metrics: dict[str, int] = field(default_factory=dict)
    procs: list[Proc] = field(default_factory=list)
    _broker_svc: services.Service | None = None
    _redis_svc: services.Service | None = None

    def env(self, metrics_port: int = 0) -> dict:
        # the caller's pipeline settings stay out (the stack sets its own); where the models are and
        # which dtype this machine runs are the machine's, and pass
        env = {k: v for k, v in os.environ.items() if not k.startswith("INTENTFLOW_") or k in MACHINE_SETTINGS}
        env.update({"INTENTFLOW_BROKER": self.broker, "INTENTFLOW_DATA_DIR": str(self.data_dir),
                    "INTENTFLOW_SESSION_TIMEOUT_S": "6", "INTENTFLOW_FEATURES__ONLINE": self.online,
                    "INTENTFLOW_METRICS_PORT": str(metrics_port), "PYTHONUNBUFFERED": "1",
                    "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "2")})
        if self._redis_svc:
            env["INTENTFLOW_REDIS_PORT"] = str(self._redis_svc.port)
        if self.critic_dir:
            env["INTENTFLOW_FILTER__CRITIC"] = self.critic_dir
        if self.engine == "openai":
            env.update({"INTENTFLOW_GENERATION__ENGINE": "openai", "INTENTFLOW_GENERATION__MODEL": "smollm2",
                        "INTENTFLOW_GENERATION__BASE_URL": f"http://127.0.0.1:{self.engine_port}"})
        env.update(self.env_overrides)
        return env

    def boot(self, say: Callable[[str], None]) -> Callable[[str], None]:
        """The models (bootstrap_models), then `start`: the start-up of the demo and the benches.
        Returns `say` that passes a line on only when it differs from the last one (a wait repeats
        its line), which the start reported through."""
        say("model: checking the bundled SmolLM2 and the default critic (made once, then cached)")
        bootstrap_models()
        say(f"starting the broker{', Redis' if self.online == 'redis' else ''} and the workers "
            f"(logs in {self.data_dir / 'logs'})")
        last = [""]

        def tell(msg: str) -> None:
            if msg != last[0]:
                last[0] = msg
                say(msg)

        self.start(progress=tell)
        return tell

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

        services.ensure_pipeline_topics(Settings(broker=self.broker))
        self.web_port = services.free_port()
        self.metrics = {name: services.free_port() for name in ("stream", "generate", "filter")}
        self.engine_port = services.free_port() if self.engine == "openai" else 0
        logs = self.data_dir / "logs"
        intentflow = str(Path(sys.executable).parent / "intentflow")
        ml = ml_python()
        self.procs = [
            Proc("stream worker", [intentflow, "worker", "--web-port", str(self.web_port)], logs / "stream.log",
                 b"Ready", "stream"),
            Proc("generation worker", [ml, "-m", "generators.cli", "worker"], logs / "generate.log", b"assigned",
                 "generate"),
            Proc("filter worker", [ml, "-m", "generators.cli", "filter-worker"], logs / "filter.log", b"assigned",
                 "filter"),
        ]
        if self.engine == "openai":
            self.procs.insert(0, Proc("engine server", [ml, "-m", "generators.cli", "serve", "--port",
                                                        str(self.engine_port)], logs / "engine.log",
                                      b"Application startup complete", "engine"))
        elif self.engine != "vllm":
            raise ValueError(f"engine {self.engine!r}: vllm (in the generation worker) or openai (a vllm serve process)")
        for p in self.procs:
            p.start(self.env(self.metrics.get(p.key, 0)))
        self.wait_ready(self.procs, wait_ready_s, progress)

    def wait_ready(self, procs: list[Proc], timeout_s: float = 300.0, progress=None) -> None:
        """Until every one of `procs` has logged its ready marker (since its last start)."""
        deadline = time.monotonic() + timeout_s
        pending = list(procs)
        while pending:
            pending = [p for p in pending if not p.ready()]
            if progress:
                progress(f"waiting for {', '.join(p.name for p in pending)}" if pending else "all workers ready")
            if pending and time.monotonic() > deadline:
                raise TimeoutError("not ready: " + "; ".join(f"{p.name} (log {p.log}):\n{p.tail()}" for p in pending))
            time.sleep(0.5)

    def proc(self, key: str) -> Proc:
        """A process of the stack by its key: "stream", "generate", "filter" or "engine"."""
        for p in self.procs:
            if p.key == key:
                return p
        raise KeyError(f"no {key!r} process in this stack ({', '.join(p.key for p in self.procs)})")

    def kill(self, key: str) -> None:
        """kill -9 one process (and its children), as a crash or the OOM killer would."""
        self.proc(key).kill()

    def restart(self, key: str) -> Proc:
        """Start a stopped or killed process again, with the same command, environment and ports;
        returns at once (`Proc.ready()` says when it is up again)."""
        p = self.proc(key)
        if p.proc is not None and p.proc.poll() is None:
            raise RuntimeError(f"{p.name} is still running (pid {p.proc.pid}): kill it first")
        p.start(self.env(self.metrics.get(p.key, 0)))
        return p

    def stop_redis(self) -> None:
        """Stop the online store (SIGTERM: it writes its append-only file first)."""
        if self._redis_svc is None:
            raise RuntimeError("this stack has no Redis (online='sqlite')")
        services.down(self._redis_svc)

    def start_redis(self) -> None:
        """Start the online store again on its port, with its data (the append-only file)."""
        if self._redis_svc is None:
            raise RuntimeError("this stack has no Redis (online='sqlite')")
        self._redis_svc = services.redis_up(self._redis_svc.port, self._redis_svc.run_dir)

    def redis_up(self) -> bool:
        return self._redis_svc is not None and services.redis_ping(self._redis_svc.port)

    @property
    def redis_port(self) -> int | None:
        """The online store's port (online="redis"), else None."""
        return self._redis_svc.port if self._redis_svc else None

    def restart_redis(self, down_s: float = 0.0) -> None:
        """Stop the online store, keep it down for `down_s` seconds, start it again with its data."""
        self.stop_redis()
        time.sleep(down_s)
        self.start_redis()

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
