"""`intentflow bench faults`: crashes and restarts during a replay, then an accounting of every event
and every edge.

The whole pipeline runs as in `bench e2e` (streams/stack.py: local Tansu broker, the stream worker
with the feature writer, the generation worker with SmolLM2 on vLLM (CPU), the filter worker with
the default critic, Feast with Redis online and Parquet offline). The bundled sample events
(search-buy and co-purchase, 5:1) are replayed as live traffic over `replay_s` seconds, with a few
producer duplicates (an event sent again: same id, same bytes) and a few invalid messages mixed in.
During the replay a fault schedule runs, each fault at a seeded random point of its own slice of
the replay, then waiting (up to 45 s) for the work it is meant to interrupt: messages waiting for
its stage (the stream worker: once for sampling, once for the feature writer). The faults run one
after another, so a wait moves the later ones; the report says when each hit and the lag it hit:

- `kill:stream`, `kill:generate`, `kill:filter`: kill -9 of the worker (its whole process group),
  a short pause, then the same command again (`Stack.kill` / `Stack.restart`);
- `restart:redis`: the online store stopped when edges are about to come (candidates waiting for
  the filter, or edges for the feature writer), left down until the feature writer is blocked on
  it (edges waiting, at most 20 s), then started again with its data (`Stack.stop_redis` /
  `Stack.start_redis`);
- `kill:engine` (schedule `full`): kill -9 of the `vllm serve` engine server the generation
  worker calls (the stack's `engine="openai"` mode), then restarted.

Recovery per fault: seconds from the restart until the process is ready again and its stage has
committed past where it was when the fault hit (or has nothing left to do); for Redis, until the
feature writer commits again.

Then the pipeline drains (every stage's consumer group caught up and staying so), and everything is
accounted from what the broker holds (topic contents, the stream worker's table changelogs) and
what Feast holds (online rows in Redis, offline Parquet parts):

- events: every valid event sent is counted exactly once in its pair's state (its id remembered,
  the pair's count equal to the distinct events sent for it); every resent duplicate is not
  counted again (deduplicated); every invalid message is in behavior.dlq (dead-lettered);
- requests: every pair that qualifies has a request; every request reaches a generation batch;
  no pair gets two requests; no request is generated twice (candidates from two generations);
- candidates: every candidate is an edge, a rejection or a dead letter;
- edges: every distinct edge (by edge id) is in Feast online and offline exactly once: each entity's
  online row counts exactly its distinct edges (`n_edges`) and lists the edge ids the reference
  computation picks; its newest offline row says the same; no offline row is written twice.

`lost` and `duplicated` sum the failures of every level; both must be 0 (the CLI exits 1
otherwise). The in-memory broker cannot be restarted without losing every topic: that fault is
listed under `not_covered` with the reason.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from streams import status
from streams.stack import ROOT, Stack

SAMPLES = ROOT / "streams" / "samples"
ENV = {"INTENTFLOW_BATCH__MAX_SIZE": "8", "INTENTFLOW_BATCH__MAX_WAIT_MS": "500",
       "INTENTFLOW_FEATURES__OFFLINE_FLUSH_S": "2", "INTENTFLOW_LOG_LEVEL": "info"}

# A fault: (what, the stages whose work it waits for). The stages are streams.status.stages' names.
SCHEDULES: dict[str, dict] = {
    # the embedded default (vLLM in the generation worker), one relation per request (a third of
    # the generation work: delivery is what is tested, and a 2-core CPU generates slowly); CI runs it
    "short": {"events": 150, "replay_s": 60.0, "engine": "vllm",
              "env": {"INTENTFLOW_GENERATION__RELATIONS": '["used_for_function"]'},
              "faults": [("kill:filter", ["filter"]), ("kill:stream", ["features", "offline writer"]),
                         ("restart:redis", ["features", "filter"]), ("kill:generate", ["generate"])]},
    # the engine in its own `vllm serve` process, the default relations, every fault, each worker
    # killed twice (the stream worker once while sampling, once while writing features)
    "full": {"events": 300, "replay_s": 120.0, "engine": "openai", "env": {},
             "faults": [("kill:stream", ["sample", "dedup + batch"]), ("kill:filter", ["filter"]),
                        ("kill:generate", ["generate"]), ("kill:stream", ["features", "offline writer"]),
                        ("restart:redis", ["features", "filter"]), ("kill:engine", ["generate"]),
                        ("kill:filter", ["filter"]), ("kill:generate", ["generate"])]},
}
NOT_COVERED = {
    "restart:broker": "the local broker (Tansu) keeps topics in memory only: a restart loses every topic, "
                      "committed offset and table changelog, so nothing could be accounted afterwards. "
                      "Broker restarts need a broker that persists (Kafka, or Tansu with S3/PostgreSQL "
                      "storage) and replication",
}
SHORT_NOT_COVERED = {
    "kill:engine": "the short schedule runs vLLM inside the generation worker (the embedded default), so "
                   "the engine dies and restarts with the worker (kill:generate); a separate `vllm serve` "
                   "engine server is killed and restarted in `--schedule full`",
}
DUP_SHARE, BAD_SHARE = 0.05, 0.02  # of the events: resent duplicates, invalid messages
WORK_WAIT_S = 45.0  # a fault waits this long at most for the work it is meant to interrupt
REDIS_DOWN_MAX_S = 20.0


def _say(progress: bool, msg: str) -> None:
    if progress:
        print(f"[faults {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --- the workload ---------------------------------------------------------------------------


@dataclass
class Item:
    """One message to send: a valid event (`event`), a resend of an earlier one (`resend` = its
    index in the list) or an invalid message (`bad` = its bytes)."""
    kind: str  # "event" | "resend" | "bad"
    event: object = None
    resend: int = -1
    bad: bytes = b""


def workload(events: int, seed: int) -> list[Item]:
    """`events` sample events (search-buy and co-purchase 5:1, each kind in its file's order,
    interleaved at random), with producer duplicates and invalid messages mixed in."""
    from processors.sources import read_rows, row_to_event

    rng = random.Random(seed)
    n_co = max(1, events // 6)
    kinds = {}
    for name, n in (("search_buy", events - n_co), ("co_purchase", n_co)):
        rows = []
        for row in read_rows(SAMPLES / f"{name}.jsonl"):
            if len(rows) >= n:
                break
            rows.append(row_to_event(row))
        kinds[name] = rows
    order = ["search_buy"] * len(kinds["search_buy"]) + ["co_purchase"] * len(kinds["co_purchase"])
    rng.shuffle(order)
    pos = Counter()
    items: list[Item] = []
    for k in order:
        items.append(Item("event", kinds[k][pos[k]]))
        pos[k] += 1
        if rng.random() < DUP_SHARE:  # a producer retry or an upstream replay: the same message again
            earlier = [i for i, it in enumerate(items) if it.kind == "event"]
            items.append(Item("resend", resend=rng.choice(earlier[-20:])))
        if rng.random() < BAD_SHARE:
            n = sum(1 for it in items if it.kind == "bad")
            bad = (json.dumps({"type": "search_buy", "event_id": f"faults-bad-{n}", "query": "garbage",
                               "purchased": "maybe"}).encode() if n % 2 else f"not json {n} \x00".encode())
            items.append(Item("bad", bad=bad))
    return items


# --- faults --------------------------------------------------------------------------------


@dataclass
class Fault:
    name: str  # "kill:stream", ...
    at_s: float  # planned, seconds into the replay
    pause_s: float  # down time before the restart (kills)
    wait_for: list[str] = field(default_factory=list)  # stages whose work it waits for
    stage: str = ""  # the consumer stage whose recovery is measured
    group: str = ""
    inputs: list[str] = field(default_factory=list)
    hit_at_s: float | None = None  # when it happened
    waited_for_work_s: float = 0.0
    lag_at_fault: int | None = None
    committed_at_fault: int | None = None
    down_s: float | None = None
    ready_s: float | None = None  # restart -> the process says it is ready
    recovery_s: float | None = None  # restart -> ready and committing again (or nothing to do)
    error: str | None = None

    def report(self) -> dict:
        return {"fault": self.name, "stage": self.stage, "at_s": self.hit_at_s, "interrupts": self.wait_for,
                "waited_for_work_s": self.waited_for_work_s,
                "lag_at_fault": self.lag_at_fault, "down_s": self.down_s, "ready_s": self.ready_s,
                "recovery_s": self.recovery_s, **({"error": self.error} if self.error else {})}


def plan(faults: list[tuple[str, list[str]]], replay_s: float, seed: int) -> list[Fault]:
    """Each fault at a seeded random point of its own slice of the middle 80% of the replay."""
    rng = random.Random(seed * 7919 + 1)
    lo, hi = 0.1 * replay_s, 0.9 * replay_s
    step = (hi - lo) / len(faults)
    return [Fault(n, round(lo + step * (i + rng.uniform(0.1, 0.9)), 2), round(rng.uniform(0.5, 3.0), 2), list(w))
            for i, (n, w) in enumerate(faults)]


# which consumer stage (streams.status.stages) a fault interrupts
_STAGE = {"stream": "sample", "generate": "generate", "filter": "filter", "engine": "generate", "redis": "features"}


def _position(broker: str, group: str, inputs: list[str]) -> tuple[int, int]:
    """(committed, lag) of a group on its inputs, all partitions together."""
    done = sum(status.committed(broker, group, inputs).values())
    return done, sum(status.topic_counts(broker, inputs).values()) - done


class FaultRunner(threading.Thread):
    """Runs the schedule against the stack while the replay goes on; each restart gets a watcher
    that measures its recovery."""

    def __init__(self, stack: Stack, topics, faults: list[Fault], t0: float, progress: bool,
                 recovery_timeout_s: float = 600.0) -> None:
        super().__init__(daemon=True)
        self.stack, self.faults, self.t0, self.progress = stack, faults, t0, progress
        self.recovery_timeout_s = recovery_timeout_s
        self.watchers: list[threading.Thread] = []
        self.error: BaseException | None = None
        self.stages = stages = status.stages(topics)
        by_name = {name: (g, ins) for name, g, ins in stages}
        for f in faults:
            f.stage = _STAGE[f.name.split(":")[1]]
            f.group, f.inputs = by_name[f.stage]
            if f.name == "kill:stream":  # the stream worker runs every stream stage: watch them all
                f.stage = "stream (all stages)"
                f.inputs = sorted({x for _, g, ins in stages if g == f.group for x in ins})

    def run(self) -> None:
        try:
            for f in self.faults:
                wait = self.t0 + f.at_s - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
                self._hit(f)
        except BaseException as e:  # noqa: BLE001 - reported, and the bench fails
            self.error = e

    def _work(self, f: Fault, seen: dict[str, int]) -> tuple[int, int, bool]:
        """(committed, lag) of the fault's stage, and whether the work it waits for is there:
        messages waiting for one of those stages, or new ones arriving since the last look (`seen`:
        messages in each stage's inputs then; a stage that keeps up has a lag for an instant only)."""
        done, lag = _position(self.stack.broker, f.group, f.inputs)
        busy = False
        for name, group, ins in self.stages:
            if name not in f.wait_for:
                continue
            n = sum(status.topic_counts(self.stack.broker, ins).values())
            busy |= name in seen and n > seen[name]
            seen[name] = n
            busy |= n - sum(status.committed(self.stack.broker, group, ins).values()) > 0
        return done, lag, busy

    def _hit(self, f: Fault) -> None:
        t_wait = time.monotonic()
        seen: dict[str, int] = {}
        done, lag, busy = self._work(f, seen)
        while not busy and time.monotonic() - t_wait < WORK_WAIT_S:  # interrupt work, not idleness
            time.sleep(0.2)
            done, lag, busy = self._work(f, seen)
        f.waited_for_work_s = round(time.monotonic() - t_wait, 1)
        f.committed_at_fault, f.lag_at_fault = done, lag
        f.hit_at_s = round(time.monotonic() - self.t0, 1)
        kind, target = f.name.split(":")
        t_down = time.monotonic()
        if kind == "kill":
            _say(self.progress, f"kill -9 {self.stack.proc(target).name} ({f.stage} lag {lag})")
            self.stack.kill(target)
            time.sleep(f.pause_s)
            ready = self.stack.restart(target).ready
        else:  # restart:redis, down until the feature writer waits on it (edges it cannot store)
            _say(self.progress, f"stopping Redis (feature writer lag {lag})")
            self.stack.stop_redis()
            while time.monotonic() - t_down < REDIS_DOWN_MAX_S:
                time.sleep(0.5)
                if time.monotonic() - t_down >= f.pause_s and _position(self.stack.broker, f.group, f.inputs)[1] > 0:
                    break
            self.stack.start_redis()
            ready = self.stack.redis_up
        f.down_s = round(time.monotonic() - t_down, 2)
        w = threading.Thread(target=self._watch, args=(f, time.monotonic(), ready), daemon=True)
        w.start()
        self.watchers.append(w)

    def _watch(self, f: Fault, t_restart: float, ready) -> None:
        try:
            while time.monotonic() - t_restart < self.recovery_timeout_s:
                if f.ready_s is None and ready():
                    f.ready_s = round(time.monotonic() - t_restart, 1)
                if f.ready_s is not None:
                    done, lag = _position(self.stack.broker, f.group, f.inputs)
                    if done > f.committed_at_fault or lag == 0:
                        f.recovery_s = round(time.monotonic() - t_restart, 1)
                        _say(self.progress, f"{f.name}: recovered in {f.recovery_s} s (ready in {f.ready_s} s)")
                        return
                time.sleep(0.5)
            f.error = f"not recovered within {self.recovery_timeout_s:.0f} s"
        except Exception as e:  # noqa: BLE001 - a restart that failed: reported, the bench fails
            f.error = repr(e)[:2000]

    def finish(self, timeout: float) -> None:
        """Wait for the schedule and every recovery (at most `timeout` seconds in all)."""
        deadline = time.monotonic() + timeout
        self.join(max(0.0, deadline - time.monotonic()))
        for w in list(self.watchers):
            w.join(max(0.0, deadline - time.monotonic()))


# --- the run -------------------------------------------------------------------------------


def run_faults_bench(schedule: str = "full", events: int | None = None, seed: int = 13, progress: bool = True,
                     data_dir: str | Path | None = None, replay_s: float | None = None,
                     drain_timeout_s: float = 900.0, stall_s: float = 300.0) -> dict:
    """Run the fault schedule and return the report (see the module docstring). Never raises for
    a failed fault or a stage that does not drain: the report then has `ok` false and `error`."""
    from streams.demo import StageBehind, follow
    from streams.producer import EventProducer
    from streams.settings import Settings

    if schedule not in SCHEDULES:
        raise ValueError(f"schedule {schedule!r}: one of {', '.join(SCHEDULES)}")
    sch = SCHEDULES[schedule]
    events = events or sch["events"]
    replay_s = replay_s or sch["replay_s"]
    data_dir = Path(data_dir or Path(".intentflow") / "bench-faults").resolve()
    stack = Stack(data_dir=data_dir, env_overrides={**ENV, **sch["env"]}, online="redis", engine=sch["engine"])
    items = workload(events, seed)
    faults = plan(sch["faults"], replay_s, seed)
    not_covered = dict(NOT_COVERED, **(SHORT_NOT_COVERED if sch["engine"] != "openai" else {}))
    out: dict = {"schedule": schedule, "seed": seed, "engine": sch["engine"], "online": "redis",
                 "settings": {**ENV, **sch["env"]}}
    t_start = time.monotonic()
    try:
        tell = stack.boot(lambda msg: _say(progress, msg))
        t_ready = time.monotonic()
        s = Settings(broker=stack.broker)
        producer = EventProducer(s)
        runner = FaultRunner(stack, s.topics, faults, time.monotonic(), progress)
        _say(progress, f"replaying {len(items)} messages over {replay_s:.0f} s; faults at "
             + ", ".join(f"{f.at_s:.0f} s {f.name}" for f in faults))
        runner.start()
        sent = _replay(items, producer, s, replay_s)
        _say(progress, "replay done; waiting for the faults' recoveries")
        runner.finish(drain_timeout_s)
        if runner.error:
            raise RuntimeError(f"fault schedule failed: {runner.error!r}")
        _say(progress, "following the pipeline until it has drained")
        t_drain = time.monotonic()
        follow(stack, s, stall_s, drain_timeout_s, tell)
        drain_s = time.monotonic() - t_drain
        _say(progress, "accounting")
        acc = account(stack, s, items, sent)
        out.update(acc)
        out.update({
            "faults": [f.report() for f in faults],
            "not_covered": [{"fault": k, "reason": v} for k, v in not_covered.items()],
            "seconds": {"start": round(t_ready - t_start, 1), "replay": replay_s, "drain_after_faults": round(drain_s, 1),
                        "total": round(time.monotonic() - t_start, 1)},
            "peak_rss_mb": stack.peak_rss_mb(),
        })
        failed = [f for f in faults if f.error or f.recovery_s is None]
        # a pipeline that dead-letters everything loses nothing: it must also have made knowledge
        made = out["edges"]["distinct_edges"] > 0
        out["ok"] = out["lost"] == 0 and out["duplicated"] == 0 and not failed and made
        problems = [f"{f.name}: {f.error or 'no recovery measured'}" for f in failed]
        if not made:
            problems.append(f"no edge was admitted ({out['requests']['dead_lettered']} of {out['requests']['batched']} "
                            "requests dead-lettered by generation)")
        if problems:
            out["error"] = "; ".join(problems)
    except (StageBehind, RuntimeError, TimeoutError, OSError, subprocess.CalledProcessError) as e:
        out.update({"ok": False, "error": f"{type(e).__name__}: {e}"[:4000], "faults": [f.report() for f in faults],
                    "not_covered": [{"fault": k, "reason": v} for k, v in not_covered.items()]})
        if isinstance(e, StageBehind):
            out["behind"] = e.behind
    finally:
        producer = None  # noqa: F841 - its broker connections go before the broker does
        stack.stop()
    from streams.bench import machine

    out["machine"] = machine()
    return out


def _replay(items: list[Item], producer, s, replay_s: float) -> list[dict]:
    """Send the items evenly over `replay_s` seconds; events stamped with the time they are sent.
    Returns what was sent, per item: {"event_id", "pair_key", "kind"} or {"bad": bytes}."""
    from processors.events import SearchBuyEvent, to_json

    sent: list[dict] = []
    raw: list[tuple[str, bytes, bytes, int]] = []  # per item: topic, key, value, timestamp (for resends)
    t0 = time.monotonic()
    for i, it in enumerate(items):
        ahead = t0 + i * replay_s / len(items) - time.monotonic()
        if ahead > 0:
            time.sleep(ahead)
        if it.kind == "event":
            ev = it.event.model_copy(update={"event_time": datetime.now(timezone.utc)})
            producer.send(ev)
            topic = s.topics.search_buy if isinstance(ev, SearchBuyEvent) else s.topics.co_purchase
            raw.append((topic, ev.partition_key.encode(), to_json(ev), int(ev.ts * 1000)))
            sent.append({"kind": "search_buy" if isinstance(ev, SearchBuyEvent) else "co_purchase",
                         "event_id": ev.event_id, "pair_key": ev.pair_key})
        elif it.kind == "resend":
            topic, key, value, ts = raw[it.resend]
            producer.send_raw(topic, value, key, ts)
            raw.append(raw[it.resend])
            sent.append({**sent[it.resend], "resend": True})
        else:
            producer.send_raw(s.topics.search_buy, it.bad, b"faults-bad")
            raw.append((s.topics.search_buy, b"faults-bad", it.bad, 0))
            sent.append({"bad": it.bad})
    producer.flush()
    return sent


# --- the accounting ------------------------------------------------------------------------


def table_state(broker: str, app_id: str, table: str) -> dict:
    """A stream worker table as its changelog leaves it (the last value per key; tombstones remove):
    what a worker recovering now would hold."""
    from infra.topics import read_records

    state: dict = {}
    for k, v in read_records(broker, f"{app_id}-{table}-changelog", complete=True, timeout=120):
        if k is None:
            continue
        key = json.loads(k)
        if v is None:
            state.pop(key, None)
        else:
            state[key] = json.loads(v)
    return state


def _read(broker: str, topic: str) -> list[dict]:
    return status.read_json(broker, topic, complete=True, timeout=120)


def _original(letter: dict) -> bytes | None:
    import base64

    v = letter.get("value_b64")
    return base64.b64decode(v) if v else None


class _Tally:
    """Losses and duplicates by kind, with a few examples of each."""

    def __init__(self) -> None:
        self.lost: Counter = Counter()
        self.duplicated: Counter = Counter()
        self.examples: dict[str, list] = defaultdict(list)

    def lose(self, kind: str, n: int = 1, example=None) -> None:
        self._add(self.lost, kind, n, example)

    def dup(self, kind: str, n: int = 1, example=None) -> None:
        self._add(self.duplicated, kind, n, example)

    def _add(self, c: Counter, kind: str, n: int, example) -> None:
        if n <= 0:
            return
        c[kind] += n
        if example is not None and len(self.examples[kind]) < 5:
            self.examples[kind].append(example)


def account(stack: Stack, s, items: list[Item], sent: list[dict]) -> dict:
    """Every message sent and every edge admitted, followed to where it must be (module docstring)."""
    b, t, ml, app = stack.broker, s.topics, status.ML, s.app_id
    tally = _Tally()
    ev = _account_events(b, t, app, sent, tally)
    req = _account_requests(b, t, ml, app, s.sampling, tally)
    cand, edges = _account_candidates(b, t, ml, tally)
    feast = _account_features(stack, edges, tally)
    return {"events_in": ev["sent"], "accounted": ev["accounted"], "lost": sum(tally.lost.values()),
            "duplicated": sum(tally.duplicated.values()), "losses": dict(tally.lost), "duplicates": dict(tally.duplicated),
            "examples": dict(tally.examples), "events": ev, "requests": req, "candidates": cand, "edges": feast}


def _account_events(b: str, t, app: str, sent: list[dict], tally: _Tally) -> dict:
    valid = [x for x in sent if "event_id" in x and not x.get("resend")]
    resent = [x for x in sent if x.get("resend")]
    bad = [x["bad"] for x in sent if "bad" in x]
    seen: dict[str, list] = {}
    for name in ("sb_seen_blocks", "cp_seen_blocks"):
        for block in table_state(b, app, name).values():
            seen.update(block["ids"])
    pairs = {**table_state(b, app, "sb_pairs"), **table_state(b, app, "cp_pairs")}
    ids_by_pair: dict[str, list[str]] = defaultdict(list)
    for x in valid:
        ids_by_pair[x["pair_key"]].append(x["event_id"])
    dlq = _read(b, t.dlq)
    why_dead = {}  # event id -> where and why a valid event was dead-lettered (a lost event's trail)
    for d in dlq:
        try:
            why_dead[json.loads(_original(d) or b"")["event_id"]] = f"{d.get('stage')}: {d.get('kind')}: {d.get('error')}"[:300]
        except (ValueError, TypeError, KeyError):
            continue
    counted = 0
    for pk, ids in ids_by_pair.items():
        n = (pairs.get(pk) or {}).get("n", 0)
        remembered = sum(1 for i in ids if i in seen)
        counted += min(len(ids), remembered, n)
        missing = [i for i in ids if i not in seen]
        tally.lose("events not counted", max(len(ids) - remembered, len(ids) - n, 0),
                   {"pair": pk, "sent": len(ids), "remembered": remembered, "count": n,
                    "not_remembered": {i: why_dead.get(i, "not dead-lettered") for i in missing}})
        tally.dup("events counted twice", n - len(ids), {"pair": pk, "sent": len(ids), "count": n})
    letters = Counter(_original(d) for d in dlq if str(d.get("stage", "")).startswith("sample_"))
    dead = sum(1 for x in bad if letters[x])
    tally.lose("invalid messages not dead-lettered", len(bad) - dead, next((x.decode(errors="replace") for x in bad
                                                                             if not letters[x]), None))
    deduplicated = max(0, len(resent) - tally.duplicated["events counted twice"])
    return {"sent": len(sent), "valid": len(valid), "resent_duplicates": len(resent), "invalid": len(bad),
            "counted": counted, "deduplicated": deduplicated, "dead_lettered": dead,
            "accounted": counted + deduplicated + dead,
            "dlq_repeats": sum(letters[x] for x in bad) - dead}


def _account_requests(b: str, t, ml, app: str, cfg, tally: _Tally) -> dict:
    from processors.sampling import search_qualifies

    sb = table_state(b, app, "sb_pairs")
    cp = table_state(b, app, "cp_pairs")
    products = table_state(b, app, "products")
    requests = _read(b, t.requests) + _read(b, t.priority_requests)
    rids = {r["request_id"] for r in requests}
    for pk, pair in sb.items():
        if pair.get("rid") is None and search_qualifies(pair, cfg) is None:
            tally.lose("qualified pairs without a request", 1, pk)
        elif pair.get("rid") is not None and pair["rid"] not in rids:
            tally.lose("requests not published", 1, pk)
    noisy = {p for p, st in products.items() if len(st.get("types", [])) > cfg.max_product_types}
    dropped_noisy = 0
    for pk, pair in cp.items():
        if pair.get("rid") is None or pair["rid"] in rids:
            continue
        from processors.events import split_key

        _, a, bb = split_key(pk)
        if a in noisy or bb in noisy:
            dropped_noisy += 1
        else:
            tally.lose("requests not published", 1, pk)
    batches = _read(b, t.batches) + _read(b, t.priority_batches)
    batched: dict[str, set[str]] = defaultdict(set)
    for x in batches:
        for r in x["requests"]:
            batched[r["pair_key"]].add(r["request_id"])
    in_batches = {r for v in batched.values() for r in v}
    for r in rids - in_batches:
        tally.lose("requests never batched", 1, r)
    for pk, v in batched.items():
        tally.dup("pairs with a second request", len(v) - 1, pk)
    generations: dict[str, set] = defaultdict(set)
    for c in _read(b, ml.candidates):
        generations[c["request_id"]].add((c.get("lineage") or {}).get("generated_at"))
    dead = set()
    for d in _read(b, ml.generation_dlq):
        if d.get("request_id"):
            dead.add(d["request_id"])
        else:  # a whole batch dead-lettered
            try:
                dead |= {r["request_id"] for r in json.loads(_original(d) or b"{}").get("requests", [])}
            except (ValueError, TypeError, AttributeError, KeyError):
                pass
    refused = {r["request_id"] for r in _read(b, ml.rejected) if r.get("kind") == "request"}
    for r, g in generations.items():
        tally.dup("requests generated twice", len(g) - 1, r)
    no_output = in_batches - set(generations) - dead - refused
    return {"requests": len(rids), "batched": len(in_batches), "batches": len(batches),
            "generated": len(set(generations) & in_batches), "dead_lettered": len(dead & in_batches),
            "refused_input": len(refused & in_batches), "without_candidates": len(no_output),
            "co_purchase_dropped_noisy": dropped_noisy}


def _account_candidates(b: str, t, ml, tally: _Tally) -> tuple[dict, list[dict]]:
    cands = {c["candidate_id"] for c in _read(b, ml.candidates)}
    edges = _read(b, t.edges)
    kept = {e.get("candidate_id") for e in edges}
    rejected = {r.get("candidate_id") for r in _read(b, ml.rejected) if r.get("kind") != "request"}
    dead = set()
    for d in _read(b, ml.filter_dlq):
        try:
            dead.add(json.loads(_original(d) or b"{}").get("candidate_id"))
        except (ValueError, AttributeError):
            pass
    missing = cands - kept - rejected - dead
    tally.lose("candidates neither kept, rejected nor dead-lettered", len(missing), next(iter(missing), None))
    return {"candidates": len(cands), "kept": len(cands & kept), "rejected": len(cands & (rejected - kept)),
            "dead_lettered": len(cands & (dead - kept - rejected)), "edge_messages": len(edges)}, edges


_VIEWS = {"query": ("query_intents", "query_id"), "product": ("product_knowledge", "product_id"),
          "pair": ("co_purchase_reasons", "pair_id")}


def reference(edges: list[dict], cfg) -> dict[str, dict]:
    """Each entity's row (view -> row) from the edges as the topic holds them, by the feature
    writer's own functions: what the stores must say. An edge id seen again by an entity changes
    nothing (a redelivered edge); the same id may inform several entities (one query's edge
    generated for two of its products informs both products)."""
    from processors import features

    states: dict[str, dict] = {}
    for e in edges:
        for key, c in features.contributions(e):
            states[key], _ = features.apply(states.get(key), c, cfg)
    return {key: dict(features.rows(key, st, cfg)) for key, st in states.items()}


def _compare(tally: _Tally, where: str, key: str, want: dict, got: dict | None) -> bool:
    """One entity's row in a store against the reference; True when it says the same."""
    if got is None or got.get("n_edges") is None:
        tally.lose(f"edges missing {where}", want["n_edges"], {"entity": key, "row": "missing"})
        return False
    ids = list(got.get("edge_ids") or [])
    n = int(got["n_edges"])
    tally.dup(f"edges twice {where}", len(ids) - len(set(ids)) + max(0, n - want["n_edges"]), {"entity": key, "n_edges": n})
    if n < want["n_edges"]:
        tally.lose(f"edges missing {where}", want["n_edges"] - n, {"entity": key, "n_edges": n, "want": want["n_edges"]})
        return False
    if set(ids) != set(want["edge_ids"]):
        tally.lose(f"rows not up to date {where}", 1, {"entity": key, "edge_ids": ids, "want": want["edge_ids"]})
        return False
    return n == want["n_edges"] and len(ids) == len(set(ids))


def _account_features(stack: Stack, edges: list[dict], tally: _Tally) -> dict:
    import pyarrow.dataset as ds

    from feature_repo.store import open_store, repo_dir
    from processors.features import FeatureConfig

    cfg = FeatureConfig(online=stack.online)
    ref = reference(edges, cfg)
    store = open_store(cfg, str(stack.data_dir), stack.redis_port or 0, apply=False)
    by_view: dict[str, list[str]] = defaultdict(list)
    for key in ref:
        by_view[key.split("|", 1)[0]].append(key)
    out = {"distinct_edges": len({e["edge_id"] for e in edges}), "entities": len(ref), "online_ok": 0, "offline_ok": 0,
           "offline_rows": 0}
    for kind, keys in by_view.items():
        view, join = _VIEWS[kind]
        ids = [k.split("|", 1)[1] for k in keys]
        got = store.get_online_features(features=[f"{view}:edge_ids", f"{view}:n_edges"],
                                        entity_rows=[{join: i} for i in ids]).to_dict()
        for i, key in enumerate(keys):
            row = {"edge_ids": got["edge_ids"][i], "n_edges": got["n_edges"][i]}
            out["online_ok"] += _compare(tally, "online", key, ref[key][view], row)
        folder = repo_dir(cfg, str(stack.data_dir)) / "offline" / view
        table = ds.dataset(str(folder), format="parquet").to_table(columns=[join, "event_timestamp", "edge_ids", "n_edges"])
        rows = table.to_pylist()
        out["offline_rows"] += len(rows)
        stamps = Counter((r[join], r["event_timestamp"]) for r in rows)
        for (ident, ts), n in stamps.items():
            tally.dup("offline rows written twice", n - 1, {"entity": f"{kind}|{ident}", "event_timestamp": str(ts), "rows": n})
        newest: dict[str, dict] = {}
        for r in rows:
            if r[join] not in newest or r["event_timestamp"] > newest[r[join]]["event_timestamp"]:
                newest[r[join]] = r
        for i, key in zip(ids, keys):
            out["offline_ok"] += _compare(tally, "offline", key, ref[key][view], newest.get(i))
    return out


# --- the report ----------------------------------------------------------------------------


def render(r: dict) -> str:
    L = ["", f"intentflow bench faults: schedule {r['schedule']} (seed {r['seed']}, engine {r['engine']}, "
             f"online {r['online']})", "=" * 60]
    if r.get("error"):
        L.append(f"error                {r['error'][:600]}")
    if "events" in r:
        e, q, c, f = r["events"], r["requests"], r["candidates"], r["edges"]
        L += [f"events in            {r['events_in']} ({e['valid']} valid, {e['resent_duplicates']} resent duplicates, "
              f"{e['invalid']} invalid)",
              f"accounted            {r['accounted']} ({e['counted']} counted once, {e['deduplicated']} deduplicated, "
              f"{e['dead_lettered']} dead-lettered)",
              f"lost                 {r['lost']}" + (f"  {r['losses']}" if r["losses"] else ""),
              f"duplicated           {r['duplicated']}" + (f"  {r['duplicates']}" if r["duplicates"] else ""),
              f"requests             {q['requests']} sampled, {q['batched']} batched, {q['generated']} generated, "
              f"{q['dead_lettered']} dead-lettered, {q['refused_input']} refused, {q['without_candidates']} without candidates",
              f"candidates           {c['candidates']}: {c['kept']} kept, {c['rejected']} rejected, "
              f"{c['dead_lettered']} dead-lettered",
              f"edges in Feast       {f['distinct_edges']} distinct edges over {f['entities']} entities: "
              f"online {f['online_ok']}/{f['entities']} rows exact, offline {f['offline_ok']}/{f['entities']} "
              f"({f['offline_rows']} history rows)"]
    L += ["", f"{'fault':<16}{'stage':<22}{'at s':>7}{'lag':>6}{'down s':>8}{'ready s':>9}{'recovery s':>12}"]
    for x in r.get("faults", []):
        def n(v):
            return "-" if v is None else str(v)
        L.append(f"{x['fault']:<16}{x['stage']:<22}{n(x['at_s']):>7}{n(x['lag_at_fault']):>6}{n(x['down_s']):>8}"
                 f"{n(x['ready_s']):>9}{n(x['recovery_s']):>12}" + (f"  {x['error'][:200]}" if x.get("error") else ""))
    for kind, xs in (r.get("examples") or {}).items():
        if kind in r.get("losses", {}) or kind in r.get("duplicates", {}):
            L.append(f"e.g. {kind}: " + "; ".join(json.dumps(x, default=str)[:300] for x in xs[:3]))
    for x in r.get("not_covered", []):
        L.append(f"not covered: {x['fault']}: {x['reason']}")
    if "seconds" in r:
        sec = r["seconds"]
        L.append(f"time                 {sec['total']} s (start {sec['start']} s, replay {sec['replay']} s, "
                 f"drain after the faults {sec['drain_after_faults']} s)")
    L.append("ok" if r.get("ok") else "NOT OK")
    return "\n".join(L)
