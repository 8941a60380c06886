"""The operator page, served by the stream worker's Faust web server (`intentflow worker --web-port N`).

GET  /               one self-contained page: the stages live (polls /api/stages) and a knowledge search
GET  /api/stages     this worker's Prometheus metrics (streams/metrics.py) per stage, with freshness quantiles
GET  /api/knowledge  ?query=TEXT | ?product=ID | ?pair=A,B: online features, lineage and augmentation text
POST /api/requests   ask for knowledge now (a serving cache miss): {"query": TEXT, "product": {...}} or
                     {"product_a": {...}, "product_b": {...}} -> a priority generation request (202)

Nothing else: Faust's own endpoints (/table/, /router/, statistics, graph, performance) are not
served (`OperatorWeb`). Access: reads (GET, HEAD) are open while the server binds to loopback, and
only to requests addressed to a loopback name (a page on another site cannot read them through a
DNS name that points at 127.0.0.1); anything that changes something (POST) needs
`Authorization: Bearer <INTENTFLOW_WEB_TOKEN>` (401 without it, 403 with a wrong one; refused
while no token is set), and so does every request when the server binds beyond loopback (the
worker refuses to start so without a token). Errors answer with a generic message and an error
id; the exception, with that id, goes to the log.

Metrics are this process's: with several workers each page shows its own share of the partitions.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import json
import logging
import math
import time
import uuid

from faust import web
from faust.web.drivers.aiohttp import Web as AiohttpWeb
from prometheus_client import REGISTRY

log = logging.getLogger("intentflow.web")
MAX_PARAM = 500


def quantile(q: float, buckets: list[tuple[float, float]]) -> float | None:
    """Like Prometheus' histogram_quantile: linear within the bucket holding rank q (buckets: (le, cumulative))."""
    total = buckets[-1][1] if buckets else 0
    if not total:
        return None
    rank, lo, below = q * total, 0.0, 0.0
    for le, cum in buckets:
        if cum >= rank:
            if math.isinf(le):  # past the last finite bound: that bound is all we know
                return lo
            return le if cum == below else lo + (le - lo) * (rank - below) / (cum - below)
        lo, below = le, cum
    return lo


def _families() -> dict[str, dict]:
    """intentflow_* samples by family: counters as {labels: value}, histograms as {labels: {buckets, count, sum}}."""
    out: dict[str, dict] = {}
    for fam in REGISTRY.collect():
        if not fam.name.startswith("intentflow_"):
            continue
        series: dict = out.setdefault(fam.name, {})
        for s in fam.samples:
            labels = tuple(sorted((k, v) for k, v in s.labels.items() if k != "le"))
            if fam.type == "histogram":
                h = series.setdefault(labels, {"buckets": [], "count": 0.0, "sum": 0.0})
                if s.name.endswith("_bucket"):
                    h["buckets"].append((float(s.labels["le"]), s.value))
                elif s.name.endswith("_count"):
                    h["count"] = s.value
                elif s.name.endswith("_sum"):
                    h["sum"] = s.value
            elif s.name.endswith("_total"):
                series[labels] = s.value
    return out


def _summary(h: dict | None, buckets: bool = False) -> dict:
    h = h or {"buckets": [], "count": 0.0, "sum": 0.0}
    b = sorted(h["buckets"])
    out = {"count": h["count"], "sum": round(h["sum"], 6),
           "p50": _round(quantile(0.5, b)), "p95": _round(quantile(0.95, b))}
    if buckets:
        out["buckets"] = [["+Inf" if math.isinf(le) else le, n] for le, n in b]
    return out


def _round(v: float | None) -> float | None:
    return None if v is None else round(v, 6)


def stages(app) -> dict:
    """/api/stages: every agent of the app as a stage, in pipeline order, with the counts this worker made."""
    fams = _families()
    events, dlq = fams.get("intentflow_events", {}), fams.get("intentflow_dlq", {})
    batch_s = fams.get("intentflow_stage_batch_seconds", {})
    out = []
    for agent in app.agents.values():
        name = agent.name.rsplit(".", 1)[-1]
        topic = agent.channel.get_topic_name()
        outcomes = {dict(k)["outcome"]: v for k, v in events.items() if dict(k)["stage"] == name}
        out.append({"stage": name, "topic": topic, "events": outcomes, "total": sum(outcomes.values()),
                    "dlq": {dict(k)["kind"]: v for k, v in dlq.items() if dict(k)["source"] == topic},
                    "batch_seconds": _summary(batch_s.get((("stage", name),)))})

    def by(family: str, label: str) -> dict:
        return {dict(k)[label]: v for k, v in fams.get(family, {}).items()}

    retries = by("intentflow_feature_push_retries", "store")
    push = {dict(k)["store"]: {**_summary(h), "retries": retries.get(dict(k)["store"], 0.0)}
            for k, h in fams.get("intentflow_feature_push_seconds", {}).items()}
    return {"ts": time.time(), "stages": out,
            "emitted": by("intentflow_emitted", "topic"), "batches": by("intentflow_batches", "priority"),
            "batch_size": _summary(fams.get("intentflow_batch_size", {}).get(())),
            "feature_rows": [{**dict(k), "rows": v}
                             for k, v in sorted(fams.get("intentflow_feature_rows", {}).items())],
            "push": push, "freshness": _summary(fams.get("intentflow_freshness_seconds", {}).get(()), buckets=True)}


def knowledge_params(query) -> tuple[str, str | tuple[str, str]]:
    """(kind, value) from the request's query string; ValueError with the reason when it is not usable."""
    given = [k for k in ("query", "product", "pair") if k in query]
    if len(given) != 1:
        raise ValueError("give exactly one of query=TEXT, product=ID or pair=A,B")
    kind = given[0]
    value = query[kind].strip()
    if not value:
        raise ValueError(f"{kind} is empty")
    if len(value) > MAX_PARAM:
        raise ValueError(f"{kind} is longer than {MAX_PARAM} characters")
    if kind == "pair":
        ids = [p.strip() for p in value.split(",")]
        if len(ids) != 2 or not all(ids):
            raise ValueError("pair takes two product ids separated by a comma: pair=A,B")
        return kind, (ids[0], ids[1])
    return kind, value


REQUEST_SHAPE = ('give {"query": TEXT, "product": {"product_id": ID, "title": TEXT, ...}} or '
                 '{"product_a": {...}, "product_b": {...}}')


def knowledge_request(body: object, now: float | None = None) -> dict:
    """A priority GenerationRequest (JSON shape) from a POST /api/requests body: the behaviour the
    serving side saw (a query and the product shown, or two products bought together). ValueError
    when the body is not one of those (the details are for the log, not the caller)."""
    from feature_repo.cache import miss_request
    from processors.events import Product
    from processors.requests import GenerationRequest

    if not isinstance(body, dict):
        raise ValueError(f"body is {type(body).__name__}, not an object")
    keys = set(body)
    if keys == {"query", "product"} and isinstance(body["query"], str) and len(body["query"]) <= MAX_PARAM:
        req = miss_request(body["query"], Product.model_validate(body["product"]).model_dump(exclude_none=True), now=now)
    elif keys == {"product_a", "product_b"}:
        a, b = (Product.model_validate(body[k]).model_dump(exclude_none=True) for k in ("product_a", "product_b"))
        req = miss_request(product_a=a, product_b=b, now=now)
    else:
        raise ValueError(f"fields {sorted(keys)}")
    if req is None:
        raise ValueError("not enough context")
    return GenerationRequest.model_validate(req).model_dump(mode="json", exclude_none=True)


class _Knowledge:
    """The Feast store, opened on first use and again after a failure. Reads block: one at a time, in a thread."""

    def __init__(self, settings) -> None:
        self.settings, self.store, self.lock = settings, None, asyncio.Lock()

    async def read(self, kind: str, value) -> dict:
        async with self.lock:
            if self.store is None:
                from feature_repo.store import open_store

                s = self.settings
                try:
                    self.store = await asyncio.to_thread(open_store, s.features, s.data_dir, s.redis_port, apply=False)
                except Exception as e:  # noqa: BLE001 - not set up yet, or the registry is unreadable
                    raise StoreUnavailable() from e
            try:
                return await asyncio.to_thread(self._read, self.store, kind, value)
            except (ValueError, TypeError):  # the value makes no key (a control character in an id, ...)
                raise
            except Exception as e:  # noqa: BLE001 - the store is down: open it again next time
                self.store = None
                raise StoreUnavailable() from e

    @staticmethod
    def _read(store, kind: str, value) -> dict:
        from feature_repo.client import FeatureReader

        return FeatureReader(store).knowledge(kind, value)


class StoreUnavailable(Exception):
    """The feature store cannot be read now (the cause is chained, for the log)."""


class OperatorWeb(AiohttpWeb):
    """Faust's aiohttp web server with none of Faust's built-in endpoints: /router/ and /table/
    (table contents, cluster routes), the statistics and production index at /, /assignment/,
    /graph/, /performance/. Only the pages the app registers are served."""

    default_blueprints = ()
    production_blueprints = ()
    debug_blueprints = ()
    optional_blueprints = ()


def loopback(host: str | None) -> bool:
    """Whether a bind address or Host name is this machine only."""
    if not host:
        return False
    host = host.strip().strip("[]")
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _host_name(request) -> str:
    host = request.headers.get("Host", "")
    if host.startswith("["):
        return host[1:host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def access(method: str, host: str, authorization: str | None, token: str, bind: str) -> tuple[int, str] | None:
    """None when the request may go on, else (status, message). Reads are open on a loopback-bound
    server to loopback Host names; writes, and everything on a server bound beyond loopback, need
    the token."""
    write = method.upper() not in ("GET", "HEAD", "OPTIONS")
    if not write and loopback(bind) and loopback(host):
        return None
    if not token:
        return 403, ("this request changes something: set INTENTFLOW_WEB_TOKEN on the worker to allow it" if write
                     else "this server binds beyond loopback and has no INTENTFLOW_WEB_TOKEN")
    scheme, _, given = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not given.strip():
        return 401, "send Authorization: Bearer <INTENTFLOW_WEB_TOKEN>"
    if not hmac.compare_digest(given.strip().encode(), token.encode()):
        return 403, "wrong token"
    return None


def error_body(message: str, error_id: str | None = None) -> dict:
    return {"error": message, "error_id": error_id or uuid.uuid4().hex[:16]}


class OperatorView(web.View):
    """Every view of the page: the access check first; any exception becomes a generic answer with
    an error id (500), logged with its traceback."""

    token = ""

    def _error(self, status: int, message: str, error_id: str | None = None, **headers: str) -> web.Response:
        return self.json(error_body(message, error_id), status=status, headers=headers or None)

    async def dispatch(self, request):
        denied = access(request.method, _host_name(request), request.headers.get("Authorization"), self.token,
                        self.app.conf.web_bind)
        if denied:
            status, message = denied
            log.warning("web %s %s refused (%d): %s", request.method, request.path, status, message)
            return self._error(status, message, **({"WWW-Authenticate": "Bearer"} if status == 401 else {}))
        try:
            return await super().dispatch(request)
        except Exception:  # noqa: BLE001 - the caller learns an id, the log the cause
            error_id = uuid.uuid4().hex[:16]
            log.exception("web %s %s failed (error id %s)", request.method, request.path, error_id)
            return self._error(500, "internal error", error_id)


def register(app, settings, request_topic=None) -> None:
    """Serve the operator page, its JSON endpoints and (with `request_topic`, the priority request
    topic) POST /api/requests from the app's web server, and nothing else.

    Call before the worker starts (and before anything touches `app.web`)."""
    app._new_web = lambda: OperatorWeb(app)  # noqa: SLF001 - App.web is built by this on first use
    knowledge = _Knowledge(settings)
    base = type("View", (OperatorView,), {"token": settings.web_token})

    def on_webserver_init(web_) -> None:
        bind = app.conf.web_bind
        if not loopback(bind) and not settings.web_token:
            raise RuntimeError(f"the web server would bind to {bind} without a token: set INTENTFLOW_WEB_TOKEN, "
                               "or bind to 127.0.0.1 (intentflow worker does)")
        log.info("operator page on %s (%s)", bind, "loopback" if loopback(bind) else "token required")

    app.on_webserver_init = on_webserver_init

    @app.page("/", name="intentflow_page")
    class Page(base):
        async def get(self, request: web.Request) -> web.Response:
            return self.html(PAGE)

    @app.page("/api/stages", name="intentflow_stages")
    class Stages(base):
        async def get(self, request: web.Request) -> web.Response:
            return self.json(stages(self.app))

    @app.page("/api/knowledge", name="intentflow_knowledge")
    class Knowledge(base):
        async def get(self, request: web.Request) -> web.Response:
            try:
                kind, value = knowledge_params(request.query)
            except ValueError as e:  # our own usage text: safe to show
                return self._error(400, str(e))
            try:
                return self.json(await knowledge.read(kind, value))
            except (ValueError, TypeError):
                error_id = uuid.uuid4().hex[:16]
                log.warning("web knowledge %s: unusable value (error id %s)", kind, error_id, exc_info=True)
                return self._error(400, f"this {kind} cannot be looked up (ids and text without control characters)",
                                   error_id)
            except StoreUnavailable:  # the store is down or not set up yet: say so, keep serving
                error_id = uuid.uuid4().hex[:16]
                log.warning("web knowledge: feature store unavailable (error id %s)", error_id, exc_info=True)
                return self._error(503, "feature store unavailable", error_id)

    if request_topic is not None:
        @app.page("/api/requests", name="intentflow_requests")
        class Requests(base):
            async def post(self, request: web.Request) -> web.Response:
                try:
                    body = json.loads(await self.web.read_request_content(request))
                    req = await asyncio.to_thread(knowledge_request, body)
                except ValueError:  # JSON and pydantic errors alike
                    error_id = uuid.uuid4().hex[:16]
                    log.warning("web request for knowledge refused (error id %s)", error_id, exc_info=True)
                    return self._error(400, REQUEST_SHAPE, error_id)
                sent = await request_topic.send(key=req["pair_key"].encode(), value=json.dumps(req).encode())
                await sent  # the broker has it
                log.info("knowledge requested over the web: %s (%s)", req["pair_key"], req["request_id"])
                return self.json({"request_id": req["request_id"], "pair_key": req["pair_key"]}, status=202)


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>intentflow: stages and knowledge</title>
<link rel="icon" href="data:,">
<style>
body{font:14px/1.4 system-ui,sans-serif;margin:1rem 2rem;color:#222;background:#fafafa}
h1{font-size:1.3rem;margin:.2rem 0}h2{font-size:1.1rem;margin:1.2rem 0 .4rem}h3{font-size:1rem;margin:0 0 .3rem}
.muted{color:#777}.err{color:#b00}
#stages,#features,.views{display:flex;flex-wrap:wrap;gap:.6rem}
.card{background:#fff;border:1px solid #ddd;border-radius:6px;padding:.5rem .7rem;min-width:14rem}
.card.idle{opacity:.55}
table{border-collapse:collapse}td,th{padding:.1rem .5rem;text-align:left;vertical-align:top}
th{font-weight:600;border-bottom:1px solid #ddd}td.n{text-align:right;font-variant-numeric:tabular-nums}
form{display:flex;gap:.4rem;margin:.4rem 0}#knowledge-input{width:28rem;padding:.25rem}
blockquote{background:#eef4ff;border-left:4px solid #69c;margin:.5rem 0;padding:.4rem .7rem}
code{font-size:12px;color:#555;word-break:break-all}
</style></head><body>
<h1>intentflow</h1>
<div class="muted">this worker's stages, polled every 2 s &middot; <span id="updated">loading&hellip;</span></div>
<h2>Stages</h2><div id="stages"></div>
<h2>Features</h2><div id="features"></div>
<h2>Knowledge</h2>
<form id="knowledge-form">
 <select id="knowledge-kind"><option value="query">query</option><option value="product">product id</option>
 <option value="pair">product pair (A,B)</option></select>
 <input id="knowledge-input" placeholder="shoes for pregnant women" autocomplete="off">
 <button id="knowledge-submit" type="submit">Search</button>
</form>
<div id="knowledge-result" data-state="empty"></div>
<script>
"use strict";
const $ = id => document.getElementById(id);
function el(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  for (const k of kids) if (k !== null && k !== undefined) e.append(k instanceof Node ? k : String(k));
  return e;
}
const num = v => v === null || v === undefined ? "\\u2013" : Number.isInteger(v) ? String(v) : Number(v).toFixed(3);
const secs = v => v === null || v === undefined ? "\\u2013"
  : v < 1 ? (v * 1000).toFixed(0) + " ms" : v.toFixed(1) + " s";
const when = t => t ? new Date(t * 1000).toISOString().replace("T", " ").slice(0, 19) + "Z" : "\\u2013";
const T = v => el("td", {}, v), N = v => el("td", {class: "n"}, v);
function table(head, rows) {
  return el("table", {}, el("tr", {}, ...head.map(h => el("th", {}, h))), ...rows);
}
let prev = null;
function rate(key, value, ts) {
  if (!prev || !(key in prev.values)) return "\\u2013";
  const dt = ts - prev.ts;
  return dt > 0 ? ((value - prev.values[key]) / dt).toFixed(1) + "/s" : "\\u2013";
}
function renderStages(d) {
  const values = {}, cards = [];
  for (const s of d.stages) {
    const rows = Object.entries(s.events).sort().map(([o, n]) => {
      values[s.stage + "|" + o] = n;
      return el("tr", {"data-outcome": o}, T(o), N(num(n)), N(rate(s.stage + "|" + o, n, d.ts)));
    });
    values[s.stage] = s.total;
    rows.push(el("tr", {class: "total"}, el("th", {}, "all"), el("th", {class: "n"}, num(s.total)),
      el("th", {class: "n"}, rate(s.stage, s.total, d.ts))));
    for (const [kind, n] of Object.entries(s.dlq)) {
      rows.push(el("tr", {class: "dlq err", "data-dlq": kind}, T("DLQ " + kind), N(num(n)), T("")));
    }
    const b = s.batch_seconds;
    cards.push(el("section", {class: "card" + (s.total ? "" : " idle"), id: "stage-" + s.stage, "data-total": s.total},
      el("h3", {}, s.stage), el("div", {class: "muted"}, "from " + s.topic),
      table(["outcome", "events", "rate"], rows),
      b.count ? el("div", {class: "muted"}, "batch p50 " + secs(b.p50) + ", p95 " + secs(b.p95)) : null));
  }
  $("stages").replaceChildren(...cards);
  const fr = d.feature_rows.map(r => {
    const key = "rows|" + r.view + "|" + r.store; values[key] = r.rows;
    return el("tr", {"data-view": r.view, "data-store": r.store}, T(r.view), T(r.store), N(num(r.rows)),
      N(rate(key, r.rows, d.ts)));
  });
  const f = d.freshness;
  const push = Object.entries(d.push).map(([store, p]) =>
    el("tr", {}, T(store), N(num(p.count)), N(secs(p.p50)), N(secs(p.p95)), N(num(p.retries))));
  $("features").replaceChildren(
    el("section", {class: "card", id: "feature-rows"}, el("h3", {}, "Feature rows pushed"),
      table(["view", "store", "rows", "rate"], fr)),
    el("section", {class: "card", id: "freshness", "data-count": f.count}, el("h3", {}, "Freshness"),
      table(["observed", "p50", "p95"], [el("tr", {}, N(num(f.count)), N(secs(f.p50)), N(secs(f.p95)))]),
      el("div", {class: "muted"}, "pushed online \\u2212 event time")),
    el("section", {class: "card", id: "pushes"}, el("h3", {}, "Pushes"),
      table(["store", "pushes", "p50", "p95", "retries"], push)));
  prev = {ts: d.ts, values};
  $("updated").textContent = "updated " + when(d.ts);
  $("updated").className = "";
}
async function poll() {
  try {
    const r = await fetch("/api/stages", {cache: "no-store"});
    if (!r.ok) throw new Error("HTTP " + r.status);
    renderStages(await r.json());
  } catch (e) {
    $("updated").textContent = "cannot reach the worker: " + e.message;
    $("updated").className = "err";
  }
}
function lineage(v) {
  const rows = [["models", (v.models || []).join(", ")], ["prompt versions", (v.prompt_versions || []).join(", ")],
    ["critic versions", (v.critic_versions || []).join(", ")], ["edges held", num(v.n_edges)],
    ["event time", when(v.event_time)], ["generated", when(v.generated_at)], ["pushed", when(v.pushed_at)],
    ["freshness", secs(v.freshness_s)]];
  rows.push(["edge ids", el("code", {class: "edge-ids"}, (v.edge_ids || []).join(" "))]);
  const trs = rows.map(([k, x]) => el("tr", {}, el("td", {class: "muted"}, k), T(x)));
  return el("table", {class: "lineage"}, ...trs);
}
function tailRows(rels, tails, scores) {
  return tails.map((t, i) =>
    el("tr", {"data-relation": rels[i]}, T(rels[i]), el("td", {class: "tail"}, t), N(num(scores[i]))));
}
function renderView(name, v) {
  let body;
  if (name === "query_intents") {
    body = [el("div", {}, "query: ", el("b", {}, v.query_text)),
      table(["relation", "intent", "score"], tailRows(v.intent_relations, v.intents, v.intent_scores))];
  } else if (name === "co_purchase_reasons") {
    body = [el("div", {}, "products: " + v.product_a_id + " + " + v.product_b_id),
      table(["relation", "reason", "score"], tailRows(v.reason_relations, v.reasons, v.reason_scores))];
  } else if (name === "product_knowledge") {
    const rows = [];
    for (const rel of Object.keys(v).sort()) {
      const tails = v[rel], scores = v[rel + "_scores"];  // a relation: its tails and their scores
      if (Array.isArray(tails) && Array.isArray(scores)) rows.push(...tailRows(tails.map(() => rel), tails, scores));
    }
    body = [el("div", {}, el("b", {}, v.title), " (" + v.product_type + ")"),
      table(["relation", "tail", "score"], rows)];
  } else if (name === "product_subcategory") {
    body = [el("div", {id: "subcategory"}, "subcategory: ", el("b", {}, v.subcategory || "\\u2013"),
      " via " + (v.subcategory_relation || "\\u2013") + ", score " + num(v.subcategory_score))];
  } else {
    body = [el("pre", {}, JSON.stringify(v, null, 1))];
  }
  return el("section", {class: "card view", "data-view": name}, el("h3", {}, name), ...body, lineage(v));
}
async function search(ev) {
  ev.preventDefault();
  const kind = $("knowledge-kind").value, value = $("knowledge-input").value.trim(), out = $("knowledge-result");
  out.dataset.state = "loading";
  out.replaceChildren(el("div", {class: "muted"}, "searching\\u2026"));
  try {
    const r = await fetch("/api/knowledge?" + new URLSearchParams({[kind]: value}), {cache: "no-store"});
    const d = await r.json();
    if (!r.ok) throw new Error((d.error || "HTTP " + r.status) + (d.error_id ? " (error id " + d.error_id + ")" : ""));
    const shown = Array.isArray(d.value) ? d.value.join(" + ") : d.value;
    const head = el("div", {}, kind + " ", el("b", {}, shown), d.found ? "" : ": no knowledge yet");
    if (!d.found) { out.replaceChildren(head); out.dataset.state = "not-found"; return; }
    out.replaceChildren(head, el("blockquote", {id: "augmentation"}, d.augmentation),
      el("div", {class: "views"}, ...Object.entries(d.features).map(([n, v]) => renderView(n, v))));
    out.dataset.state = "found";
  } catch (e) {
    out.replaceChildren(el("div", {class: "err"}, e.message));
    out.dataset.state = "error";
  }
}
const PLACEHOLDER = {query: "shoes for pregnant women", product: "B07XYZ", pair: "B07XYZ,B08ABC"};
$("knowledge-kind").addEventListener("change", e => {
  $("knowledge-input").placeholder = PLACEHOLDER[e.target.value];
});
$("knowledge-form").addEventListener("submit", search);
poll();
setInterval(poll, 2000);
</script></body></html>
"""
