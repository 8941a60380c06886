"""The operator page (streams/web.py) in real headless Chromium, served by a real worker over a real
broker and Redis: the stages fill in live, and a search shows what the feature writer stored."""

import base64
import json
import os
import re
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from confluent_kafka import Producer

from infra import services
from processors import features
from streams.web import quantile
from tests.feature_data import co_edge, product, reference, search_edge
from tests.kafka_util import FEATURE_STAGES, GROUP, TOPIC, Worker, wait_caught_up, worker_env

pytestmark = pytest.mark.integration
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
T0 = time.time() - 600
PRODUCTS = [product(f"P{i}", f"Product number {i} walking shoe", "walking shoes") for i in range(3)]
QUERIES = {
    "shoes for pregnant women": [("used_for_audience", "pregnant women"), ("used_for_function", "prevent slipping"),
                                 ("xWant", "walk comfortably")],
    "non slip shoes": [("used_for_function", "grip on wet floors"), ("used_in_location", "hospital wards")],
}

SNAPSHOT_JS = """
const stages = arguments[0], all = sel => [...document.querySelectorAll(sel)];
const count = (sel, key) => Object.fromEntries(all(sel).map(r => [r.dataset[key], r.cells[1].textContent]));
const per = (sel, key) => Object.fromEntries(stages.map(n => [n, count(`#stage-${n} ${sel}`, key)]));
return {
  events: per("tr[data-outcome]", "outcome"), dlq: per("tr[data-dlq]", "dlq"),
  rows: all("#feature-rows tr[data-view]").map(r => r.dataset.view + "|" + r.dataset.store),
  freshness: document.getElementById("freshness")?.dataset.count ?? "0",
  rate: document.querySelector("#stage-route_edges tr.total")?.cells[2].textContent ?? "",
};
"""


def _edges() -> list[dict]:
    out = [search_edge(q, p, rel, tail, round(0.6 + 0.1 * ri + 0.01 * pi, 3), T0 + qi)
           for qi, (q, rels) in enumerate(QUERIES.items()) for pi, p in enumerate(PRODUCTS[:2])
           for ri, (rel, tail) in enumerate(rels)]
    return out + [co_edge(PRODUCTS[0], PRODUCTS[2], "used_with", "insoles", 0.8, T0)]


def _get(url: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


@pytest.fixture
def chrome(tmp_path):
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not os.access(p, os.X_OK)]
    if missing:
        pytest.fail(f"{' and '.join(missing)} missing: run `bash infra/install-system.sh` (Debian chromium and "
                    "chromium-driver; `make test` and CI run it)")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.fail("selenium missing: `.venv/bin/pip install -e '.[test]'`")
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1400,1800",
              f"--user-data-dir={tmp_path / 'chromium-profile'}", "--no-first-run", "--disable-extensions",
              "--disable-background-networking", "--disable-component-update", "--disable-sync"):
        opts.add_argument(a)
    opts.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
    service = Service(CHROMEDRIVER, log_output=str(tmp_path / "chromedriver.log"))
    driver = webdriver.Chrome(options=opts, service=service)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def test_quantile_interpolates_within_buckets():
    b = [(1.0, 2.0), (2.0, 6.0), (5.0, 10.0), (float("inf"), 10.0)]
    assert quantile(0.5, b) == pytest.approx(1.75)  # rank 5 of 10: 3/4 through (1, 2]
    assert quantile(0.1, b) == pytest.approx(0.5)  # in the first bucket, from 0
    assert quantile(1.0, b) == 5.0
    assert quantile(0.95, [(1.0, 0.0), (float("inf"), 4.0)]) == 1.0  # past the last bound: that bound
    assert quantile(0.5, [(1.0, 0.0), (float("inf"), 0.0)]) is None


def test_operator_page_shows_stages_live_and_finds_knowledge(broker, redis, tmp_path, chrome):
    from selenium.webdriver.common.by import By
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import Select, WebDriverWait

    from feature_repo.client import augmentation

    data = tmp_path / "data"
    port = services.free_port()
    base = f"http://127.0.0.1:{port}"
    env = worker_env(broker, data, INTENTFLOW_REDIS_PORT=str(redis.port), INTENTFLOW_FEATURES__OFFLINE_FLUSH_S="0.5")
    services.ensure_topics(broker, FEATURE_STAGES + [TOPIC.dlq, TOPIC.priority_requests, TOPIC.batches,
                                                    TOPIC.priority_batches], 4)
    worker = Worker(env, tmp_path / "worker.log",
                    args=("--web-port", str(port), "--web-bind", "127.0.0.1", "--web-host", "127.0.0.1")).start()
    try:
        worker.wait_ready(timeout=180)
        deadline = time.monotonic() + 60
        while True:  # the web server may come up just after "Ready"
            try:
                assert _get(base + "/api/stages")[0] == 200
                break
            except (urllib.error.URLError, ConnectionError):
                if time.monotonic() > deadline:
                    raise AssertionError(f"no web server on {base}:\n{worker.tail()}")
                time.sleep(0.5)

        edges = _edges()
        p = Producer({"bootstrap.servers": broker, "enable.idempotence": True, "partitioner": "murmur2_random"})
        for e in edges:
            p.produce(TOPIC.edges, key=e["edge_id"].encode(), value=json.dumps(e).encode())
        p.produce(TOPIC.edges, key=b"bad", value=b"not json")
        assert p.flush(30) == 0
        del p
        wait_caught_up(broker, GROUP, FEATURE_STAGES, timeout=240, settle=1.5)
        # the API answers plainly, and says what is wrong with a bad request
        for bad in ("", "?query=", "?pair=P0", "?query=a&product=b"):
            status, body = _get(base + "/api/knowledge" + bad)
            assert status == 400 and body["error"], (bad, status, body)
        # counters count again after a redelivery (a rebalance on a busy machine): exact only where state makes them so
        api = {s["stage"]: s for s in _get(base + "/api/stages")[1]["stages"]}
        route, write = api["route_edges"], api["write_features"]
        keys = [(key, e["edge_id"]) for e in edges for key, _ in features.contributions(e)]
        assert route["events"]["routed"] >= len(edges) and route["events"]["dead_letter"] >= 1, route
        assert route["dlq"]["invalid_edge"] >= 1, route
        assert write["events"]["applied"] == len(set(keys)), write  # an edge id an entity has seen changes nothing
        assert write["events"].get("duplicate", 0) >= len(keys) - len(set(keys)), write  # via two products
        want = {name: {o: str(int(n)) for o, n in api[name]["events"].items()}
                for name in ("route_edges", "write_features")}

        d = chrome
        d.get_log("performance")  # drop what the browser did before it opened the page (its new tab page)
        t_page = time.monotonic()
        d.get(base + "/")

        def shown(drv) -> dict:  # one read in the page's own thread: the 2 s poll redraws the cards
            return drv.execute_script(SNAPSHOT_JS, list(want))

        try:
            WebDriverWait(d, 60, poll_frequency=0.3).until(lambda drv: shown(drv)["events"] == want)
        except TimeoutException:
            raise AssertionError(f"the page shows {shown(d)}, the worker counted {want}") from None
        page = shown(d)
        assert page["dlq"] == {"route_edges": {"invalid_edge": str(int(route["dlq"]["invalid_edge"]))},
                               "write_features": {}}
        assert {"query_intents|online", "product_knowledge|online", "co_purchase_reasons|online"} <= set(page["rows"])
        assert int(page["freshness"]) > 0
        # rates need two polls
        WebDriverWait(d, 10).until(lambda drv: "/s" in shown(drv)["rate"])

        ref = reference(edges)
        result = d.find_element(By.ID, "knowledge-result")

        def search(kind: str, text: str, state: str = "found") -> None:
            Select(d.find_element(By.ID, "knowledge-kind")).select_by_value(kind)
            box = d.find_element(By.ID, "knowledge-input")
            box.clear()
            box.send_keys(text)
            d.find_element(By.ID, "knowledge-submit").click()
            WebDriverWait(d, 60, poll_frequency=0.2).until(
                lambda drv: result.get_attribute("data-state") not in ("loading", "empty")
                and text.split(",")[0] in result.text)
            assert result.get_attribute("data-state") == state, result.text

        def tails(view: str) -> list[tuple[str, str]]:
            return [(r.get_attribute("data-relation"), r.find_element(By.CLASS_NAME, "tail").text)
                    for r in result.find_elements(By.CSS_SELECTOR, f"section[data-view='{view}'] tr[data-relation]")]

        q = "shoes for pregnant women"
        search("query", q)
        want = ref[f"query|{features.query_id(q)}"]["query_intents"]
        assert tails("query_intents") == list(zip(want["intent_relations"], want["intents"]))
        assert {t for _, t in tails("query_intents")} == {t for _, t in QUERIES[q]}
        assert d.find_element(By.ID, "augmentation").text == augmentation({"query_intents": want})
        lineage = result.find_element(By.CSS_SELECTOR, "section[data-view='query_intents'] .lineage").text
        assert "smollm2" in lineage and "critic-test" in lineage and "p1-2026-11/plain" in lineage
        assert result.find_element(By.CSS_SELECTOR, ".edge-ids").text.split() == want["edge_ids"]
        screenshot_query = d.get_screenshot_as_png()

        search("product", "P0")
        pk, want = tails("product_knowledge"), ref["product|P0"]
        kv = want["product_knowledge"]
        assert pk == [(rel, t) for rel in sorted(kv) if rel + "_scores" in kv for t in kv[rel]]
        assert ("used_with", "insoles") in pk and ("used_in_location", "hospital wards") in pk
        sub = want["product_subcategory"]["subcategory"]
        assert f"subcategory: {sub} via" in d.find_element(By.ID, "subcategory").text

        search("pair", "P2,P0")
        assert tails("co_purchase_reasons") == [("used_with", "insoles")]
        search("query", "clogs for nurses", state="not-found")
        print(f"\npage up and searched in {time.monotonic() - t_page:.1f}s")

        search("product", "P0")
        art = Path(os.environ.get("INTENTFLOW_ARTIFACTS") or tmp_path)
        art.mkdir(parents=True, exist_ok=True)
        shot = art / "web-page.png"
        full = d.execute_cdp_cmd("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True})
        shot.write_bytes(base64.b64decode(full["data"]))  # the whole page, not just the window
        (art / "web-page-query.png").write_bytes(screenshot_query)
        print(f"screenshot: {shot}")

        # nothing but this worker: every request the page made, and no absolute URL in it
        sent = [json.loads(e["message"])["message"] for e in d.get_log("performance")]
        urls = [m["params"]["request"]["url"] for m in sent if m["method"] == "Network.requestWillBeSent"]
        assert urls and all(u.startswith(base + "/") or u.startswith("data:") for u in urls), urls
        assert not re.findall(r"https?://(?!127\.0\.0\.1[:/])", d.page_source)
        errors = [e for e in d.get_log("browser") if e["level"] == "SEVERE"]
        assert not errors, errors
    finally:
        worker.stop()
