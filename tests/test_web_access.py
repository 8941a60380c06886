"""Who may reach what on the stream worker's web server (streams/web.py): only the operator page's
routes are served, reads are open on loopback, anything that changes something needs the token,
and errors say nothing about internals. Unit rules first, then a real worker answering HTTP."""

import json
import time
import urllib.error
import urllib.request

import pytest

from infra import services
from streams.web import access, knowledge_request, loopback
from tests.kafka_util import Worker, read_json, worker_env

TOKEN = "t0ken-for-tests"
FAUST_PATHS = ["/table/", "/table/entity_knowledge/", "/table/entity_knowledge/x/", "/router/", "/router/topics",
               "/router/entity_knowledge/", "/stats/", "/assignment/", "/graph/", "/performance/"]
SHOE = {"product_id": "B01", "title": "Skechers Women's Go Walk Slip-Resistant Shoe", "product_type": "walking shoes"}


def test_reads_are_open_on_loopback_only_and_writes_need_the_token():
    lo = "127.0.0.1"
    assert access("GET", "127.0.0.1", None, "", lo) is None
    assert access("HEAD", "localhost", None, TOKEN, lo) is None
    assert access("GET", "evil.example", None, TOKEN, lo)[0] == 401  # a name pointing at 127.0.0.1 (DNS rebinding)
    assert access("POST", "127.0.0.1", None, TOKEN, lo)[0] == 401
    assert access("POST", "127.0.0.1", "Bearer nope", TOKEN, lo)[0] == 403
    assert access("POST", "127.0.0.1", f"Basic {TOKEN}", TOKEN, lo)[0] == 401
    assert access("POST", "127.0.0.1", f"Bearer {TOKEN}", TOKEN, lo) is None
    assert access("POST", "127.0.0.1", "Bearer ", "", lo)[0] == 403  # no token set: refused whatever is sent
    assert access("DELETE", "127.0.0.1", None, "", lo)[0] == 403
    assert access("GET", "10.0.0.5", None, TOKEN, "0.0.0.0")[0] == 401  # exposed: reads need it too
    assert access("GET", "10.0.0.5", f"Bearer {TOKEN}", TOKEN, "0.0.0.0") is None
    assert [loopback(h) for h in ("127.0.0.1", "::1", "[::1]", "localhost", "0.0.0.0", "10.1.2.3", "", None)] == \
        [True, True, True, True, False, False, False, False]


def test_a_knowledge_request_is_built_from_behaviour_only():
    req = knowledge_request({"query": "Shoes for Nurses", "product": SHOE}, now=1_790_000_000.0)
    assert (req["behavior"], req["source"], req["priority"], req["query"]) == ("search_buy", "cache_miss", 2.0,
                                                                               "shoes for nurses")
    pair = knowledge_request({"product_a": SHOE, "product_b": {"product_id": "B02", "title": "Socks"}})
    assert pair["behavior"] == "co_purchase"
    for bad in ([], {"query": "x"}, {"query": "x", "product": {"product_id": "B01"}}, {"query": 3, "product": SHOE},
                {"query": "x", "product": SHOE, "extra": 1}, {"product_a": SHOE, "product_b": {"product_id": "a\x00"}},
                {"query": "   ", "product": SHOE}, {"query": "\u200b\t", "product": SHOE}):
        with pytest.raises(ValueError):
            knowledge_request(bad)


def _call(url: str, method: str = "GET", body: bytes | None = None, headers: dict | None = None) -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A broker and one stream worker with its web server on loopback and a token (SQLite online store)."""
    tmp = tmp_path_factory.mktemp("web-access")
    port = services.free_port()
    broker_svc = services.broker_up(port, tmp / "run")
    broker = f"127.0.0.1:{port}"
    web_port = services.free_port()
    env = worker_env(broker, tmp / "data", INTENTFLOW_FEATURES__ONLINE="sqlite", INTENTFLOW_WEB_TOKEN=TOKEN)
    worker = Worker(env, tmp / "worker.log", args=("--web-port", str(web_port))).start()
    base = f"http://127.0.0.1:{web_port}"
    try:
        worker.wait_ready(timeout=180)
        deadline = time.monotonic() + 60
        while True:  # the web server may come up just after "Ready"
            try:
                if _call(base + "/api/stages")[0] == 200:
                    break
            except (urllib.error.URLError, ConnectionError):
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"no web server on {base}:\n{worker.tail()}")
            time.sleep(0.5)
        yield {"base": base, "broker": broker, "worker": worker, "env": env, "tmp": tmp}
    finally:
        worker.stop()
        services.down(broker_svc)


@pytest.mark.integration
def test_only_the_operator_pages_are_served(served):
    base = served["base"]
    for path in FAUST_PATHS:
        status, body = _call(base + path)
        assert status == 404, (path, status, body[:200])
    status, body = _call(base + "/")
    assert status == 200 and body.startswith(b"<!doctype html>")  # the page, not Faust's {"status": "OK"}
    assert _call(base + "/api/stages")[0] == 200


@pytest.mark.integration
def test_asking_for_knowledge_needs_the_token(served):
    base, url = served["base"], served["base"] + "/api/requests"
    body = json.dumps({"query": "clogs for nurses", "product": SHOE}).encode()
    status, out = _call(url, "POST", body, {"Content-Type": "application/json"})
    assert status == 401 and set(json.loads(out)) == {"error", "error_id"}
    assert _call(url, "POST", body, {"Authorization": "Bearer wrong"})[0] == 403
    assert _call(base + "/api/stages", headers={"Host": "attacker.example"})[0] == 401  # not a loopback name
    assert read_json(served["broker"], "knowledge.requests.priority") == []  # nothing got through
    status, out = _call(url, "POST", body, {"Authorization": f"Bearer {TOKEN}"})
    assert status == 202, out
    rid = json.loads(out)["request_id"]
    (sent,) = read_json(served["broker"], "knowledge.requests.priority")
    assert sent["request_id"] == rid and sent["source"] == "cache_miss" and sent["product"]["product_id"] == "B01"
    # reads change nothing and need no token; other methods on them are not routes at all
    assert _call(base + "/api/stages", "POST", b"{}", {"Authorization": f"Bearer {TOKEN}"})[0] == 405


@pytest.mark.integration
def test_errors_answer_with_an_id_and_keep_the_details_in_the_log(served):
    base, worker = served["base"], served["worker"]
    for path, method, body in (("/api/knowledge?pair=B01%00,B02", "GET", None),  # a control character in an id
                               ("/api/requests", "POST", b"{not json"),
                               ("/api/requests", "POST", json.dumps({"query": "x", "product": {"id": 1}}).encode())):
        status, out = _call(base + path, method, body, {"Authorization": f"Bearer {TOKEN}"})
        assert status == 400, (path, status, out)
        got = json.loads(out)
        assert set(got) == {"error", "error_id"}, got
        text = out.decode()
        for leak in ("Traceback", "Error:", "ValueError", "JSONDecode", "validation error", "U+0000", "File \""):
            assert leak not in text, (path, text)
        deadline = time.monotonic() + 10
        while got["error_id"] not in worker.tail(200_000) and time.monotonic() < deadline:
            time.sleep(0.2)
        logged = [line for line in worker.tail(200_000).splitlines() if got["error_id"] in line]
        assert logged and ("ValueError" in logged[0] or "ValidationError" in logged[0]
                           or "JSONDecodeError" in logged[0]), (path, logged)


@pytest.mark.integration
def test_a_worker_exposed_beyond_loopback_without_a_token_does_not_start(served):
    env = {k: v for k, v in served["env"].items() if k != "INTENTFLOW_WEB_TOKEN"}
    env["INTENTFLOW_APP_ID"] = "intentflow-exposed"  # its own group: the served worker keeps its partitions
    port = services.free_port()
    w = Worker(env, served["tmp"] / "exposed.log", name="exposed worker",
               args=("--web-port", str(port), "--web-bind", "0.0.0.0")).start()
    try:
        w.proc.wait(120)
    finally:
        w.kill()
    assert w.proc.returncode != 0
    assert "INTENTFLOW_WEB_TOKEN" in w.tail(20_000)
