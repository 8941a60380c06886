"""The Grafana dashboard (infra/grafana/intentflow.json) queries only metrics and labels the workers export.

The metric definitions come from the code itself: every module under streams/, generators/,
processors/ and feature_repo/ that calls a prometheus_client constructor (found with `ast`) is
imported and its metric objects are read. A module that cannot be imported in this environment
(an ML-only dependency such as torch or vllm at top level) falls back to its `ast` constructor
calls. Each metric family is expanded into the sample names Prometheus stores: a counter is
`<name>_total` (prometheus_client strips one trailing `_total` from the given name, then adds it),
a histogram `<name>_bucket` (with `le`), `<name>_sum` and `<name>_count`, and so on.
"""

from __future__ import annotations

import ast
import importlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

import pytest
from prometheus_client.metrics import MetricWrapperBase

ROOT = Path(__file__).resolve().parents[1]
DASHBOARD = ROOT / "infra" / "grafana" / "intentflow.json"
PACKAGES = ("streams", "generators", "processors", "feature_repo")
KNOWN_MODULES = {"streams.metrics", "generators.worker", "generators.filter_worker"}
TARGET_LABELS = {"job", "instance"}  # added by Prometheus to every scraped sample

CONSTRUCTORS = {"Counter": "counter", "Gauge": "gauge", "Histogram": "histogram", "Summary": "summary",
                "Info": "info", "Enum": "stateset"}
SUFFIXES = {  # sample names a family exposes, and the labels a suffix adds
    "counter": {"_total": (), "_created": ()},
    "gauge": {"": ()},
    "histogram": {"_bucket": ("le",), "_sum": (), "_count": (), "_created": ()},
    "summary": {"": ("quantile",), "_sum": (), "_count": (), "_created": ()},
    "info": {"_info": ()},
    "stateset": {"": ()},  # an Enum adds a label named after the metric, handled in samples()
}


@dataclass(frozen=True)
class Family:
    name: str  # as prometheus_client keeps it: a counter's without `_total`
    type: str
    labels: tuple[str, ...]
    module: str

    def samples(self) -> dict[str, set[str]]:
        """Exposed sample name -> the label names it carries."""
        extra = (self.name,) if self.type == "stateset" else ()
        return {self.name + sfx: {*self.labels, *more, *extra} for sfx, more in SUFFIXES[self.type].items()}


# --------------------------------------------------------------------------- metric definitions

def _prom_aliases(tree: ast.Module) -> tuple[dict[str, str], set[str]]:
    """Local names bound to prometheus_client classes (`Counter as PromCounter`) and module aliases."""
    classes, modules = {}, set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "prometheus_client":
            for a in node.names:
                if a.name in CONSTRUCTORS:
                    classes[a.asname or a.name] = a.name
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name == "prometheus_client":
                    modules.add(a.asname or a.name)
    return classes, modules


def _constructor(call: ast.Call, classes: dict[str, str], modules: set[str]) -> str | None:
    f = call.func
    if isinstance(f, ast.Name):
        return classes.get(f.id)
    if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) and f.value.id in modules:
        return f.attr if f.attr in CONSTRUCTORS else None
    return None


def _const(node: ast.AST | None):
    try:
        return ast.literal_eval(node) if node is not None else None
    except ValueError:
        return None


def families_from_ast(path: Path, module: str) -> list[Family]:
    """prometheus_client constructor calls in a source file, named the way prometheus_client names them."""
    tree = ast.parse(path.read_text(), str(path))
    classes, modules = _prom_aliases(tree)
    out = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call) or not (cls := _constructor(node, classes, modules)):
            continue
        kw = {k.arg: k.value for k in node.keywords if k.arg}
        name = _const(node.args[0] if node.args else kw.get("name"))
        labels = _const(node.args[2] if len(node.args) > 2 else kw.get("labelnames")) or ()
        assert isinstance(name, str), f"{path}:{node.lineno}: metric name is not a string literal"
        name = "_".join(p for p in (_const(kw.get("namespace")), _const(kw.get("subsystem")), name) if p)
        unit = _const(kw.get("unit"))
        if unit and not name.endswith("_" + unit):
            name += "_" + unit
        if cls == "Counter" and name.endswith("_total"):
            name = name[: -len("_total")]
        if cls == "Info" and name.endswith("_info"):
            name = name[: -len("_info")]
        out.append(Family(name, CONSTRUCTORS[cls], tuple(labels), module))
    return out


def defining_modules() -> dict[str, Path]:
    """Every module of the product packages that constructs a prometheus_client metric."""
    found = {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            tree = ast.parse(path.read_text(), str(path))
            classes, modules = _prom_aliases(tree)
            if any(isinstance(n, ast.Call) and _constructor(n, classes, modules) for n in ast.walk(tree)):
                rel = path.relative_to(ROOT).with_suffix("")
                found[".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)] = path
    return found


def families_from_import(module: str) -> list[Family]:
    mod = importlib.import_module(module)
    out = []
    for obj in vars(mod).values():
        if isinstance(obj, MetricWrapperBase):
            d = obj.describe()[0]  # d.name: a counter's name without `_total`, as exposed before the suffix
            out.append(Family(d.name, d.type, tuple(obj._labelnames), module))
    return out


def load_families() -> tuple[list[Family], dict[str, str]]:
    """All metric families, and how each module was read ("import" or "ast: <why>")."""
    families, how = [], {}
    for module, path in defining_modules().items():
        try:
            fams = families_from_import(module)
            how[module] = "import"
        except ImportError as e:  # an ML-only dependency missing here: read the constructors instead
            fams = families_from_ast(path, module)
            how[module] = f"ast: {e!r}"
        families += fams
    return families, how


FAMILIES, HOW = load_families()
SAMPLES: dict[str, set[str]] = {}
for _f in FAMILIES:
    SAMPLES.update(_f.samples())


# --------------------------------------------------------------------------- the dashboard

def load_dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def all_panels(dash: dict) -> list[dict]:
    out = []
    for p in dash["panels"]:
        out.append(p)
        out.extend(p.get("panels") or [])  # panels inside a collapsed row
    return out


def targets(dash: dict) -> list[tuple[str, dict]]:
    return [(p["title"], t) for p in all_panels(dash) for t in p.get("targets") or [] if t.get("expr")]


# --------------------------------------------------------------------------- PromQL, just enough of it

STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
IDENT = re.compile(r"(?<![\w$.])([a-zA-Z_:][\w:]*)(\s*\()?")
GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
SELECTOR = re.compile(r"(?<![\w$.])([a-zA-Z_:][\w:]*)?\s*\{([^}]*)\}")
MATCHER = re.compile(r"([a-zA-Z_]\w*)\s*(?:=~|!~|!=|=)")
KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless",
            "offset", "atan2", "inf", "nan",
            # aggregation operators: may be followed by `by (...)` rather than `(`
            "sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values", "bottomk", "topk",
            "quantile", "limitk", "limit_ratio"}


def metric_names(expr: str) -> set[str]:
    """Metric names in a PromQL expression: identifiers that are not functions, keywords or labels."""
    e = STRING.sub('""', expr)
    e = re.sub(r"\[[^\]]*\]", "", e)  # range and subquery selectors ($__rate_interval, 5m:1m)
    e = re.sub(r"\{[^}]*\}", "", e)  # label matchers
    e = GROUPING.sub(r"\1", e)  # label lists of by / without / on / ignoring / group_*
    return {m.group(1) for m in IDENT.finditer(e) if not m.group(2) and m.group(1).lower() not in KEYWORDS}


def selectors(expr: str) -> list[tuple[str | None, set[str]]]:
    """(metric name or None, label names matched) for every `name{...}` / `{...}` selector."""
    e = STRING.sub('""', expr)
    return [(m.group(1), set(MATCHER.findall(m.group(2)))) for m in SELECTOR.finditer(e)]


def grouping_labels(expr: str) -> set[str]:
    e = STRING.sub('""', expr)
    return {lab.strip() for m in GROUPING.finditer(e) for lab in m.group(2).split(",") if lab.strip()}


def test_promql_helpers_on_a_tricky_expression():
    expr = ('histogram_quantile(0.9, sum by (le, stage) (rate(foo_seconds_bucket{stage=~"a|b{c}", job!="x"}'
            '[$__rate_interval]))) / scalar(sum without (instance) (bar_total offset 1h)) * 1e3 '
            '+ on (stage) group_left (outcome) max by (stage) (baz{outcome="kept"}[5m:1m])')
    assert metric_names(expr) == {"foo_seconds_bucket", "bar_total", "baz"}
    assert selectors(expr) == [("foo_seconds_bucket", {"stage", "job"}), ("baz", {"outcome"})]
    assert grouping_labels(expr) == {"le", "stage", "instance", "outcome"}


# --------------------------------------------------------------------------- the tests

def test_metric_definitions_are_found():
    assert KNOWN_MODULES <= set(HOW), f"metric modules found: {sorted(HOW)}"
    names = [f.name for f in FAMILIES]
    assert len(names) == len(set(names)), f"a metric name is defined twice: {sorted(names)}"
    # the naming rule, on two metrics whose given names end in `_total`
    assert "intentflow_events_total" in SAMPLES and "intentflow_events_total_total" not in SAMPLES
    assert "intentflow_generation_total" in SAMPLES
    assert {"intentflow_freshness_seconds_bucket", "intentflow_freshness_seconds_sum",
            "intentflow_freshness_seconds_count"} <= set(SAMPLES)
    assert "intentflow_freshness_seconds" not in SAMPLES  # a histogram has no bare sample


def test_sample_names_match_what_prometheus_client_exposes():
    """The suffix rules above, checked against prometheus_client's own output for every family."""
    import prometheus_client as pc

    classes = {"counter": pc.Counter, "gauge": pc.Gauge, "histogram": pc.Histogram, "summary": pc.Summary}
    for f in FAMILIES:
        if f.type not in classes:
            continue
        reg = pc.CollectorRegistry()
        m = classes[f.type](f.name, "doc", f.labels, registry=reg)
        child = m.labels(*("x" for _ in f.labels)) if f.labels else m
        getattr(child, "inc" if f.type in ("counter", "gauge") else "observe")(1)
        exposed = {s.name: set(s.labels) for fam in reg.collect() for s in fam.samples}
        assert exposed == f.samples(), f.name


def test_ast_reading_agrees_with_the_imported_metrics():
    """The fallback reads the same families as the import, wherever both work (it is not dead code)."""
    for module, path in defining_modules().items():
        if HOW[module] != "import":
            continue
        assert sorted(families_from_ast(path, module), key=lambda f: f.name) == \
            sorted(families_from_import(module), key=lambda f: f.name), module


def test_dashboard_is_grafana_10_json_on_a_templated_prometheus_datasource():
    dash = load_dashboard()
    assert dash["uid"] and dash["title"] and dash["schemaVersion"] >= 37  # Grafana 10.0 writes 37+
    var = {v["name"]: v for v in dash["templating"]["list"]}
    assert var["datasource"]["type"] == "datasource" and var["datasource"]["query"] == "prometheus"
    for p in all_panels(dash):
        if p["type"] == "row":
            continue
        assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]
        assert p["targets"], p["title"]
        for t in p["targets"]:
            assert t["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]
            assert t["expr"].strip(), p["title"]
        ref_ids = [t["refId"] for t in p["targets"]]
        assert len(ref_ids) == len(set(ref_ids)), p["title"]


def test_panel_ids_are_unique_and_every_panel_has_a_title():
    panels = all_panels(load_dashboard())
    ids = [p.get("id") for p in panels]
    assert None not in ids
    assert len(ids) == len(set(ids)), sorted(i for i in ids if ids.count(i) > 1)
    assert all(isinstance(p.get("title"), str) and p["title"].strip() for p in panels)


def test_every_metric_in_the_dashboard_is_exported():
    used: dict[str, set[str]] = {}
    for title, t in targets(load_dashboard()):
        for name in metric_names(t["expr"]):
            used.setdefault(name, set()).add(title)
    unknown = {n: sorted(titles) for n, titles in used.items() if n not in SAMPLES}
    assert not unknown, f"not exported by any worker: {unknown}; exported: {sorted(SAMPLES)}"
    # and the dashboard covers what was asked of it
    assert {"intentflow_events_total", "intentflow_dlq_total", "intentflow_generation_total",
            "intentflow_engine_batch_seconds_bucket", "intentflow_filter_total", "intentflow_feature_rows_total",
            "intentflow_feature_push_seconds_bucket", "intentflow_feature_push_retries_total",
            "intentflow_freshness_seconds_bucket", "intentflow_stage_batch_seconds_bucket",
            "intentflow_batch_size_bucket"} <= set(used)


@pytest.mark.parametrize("title,expr,legend", [(ti, t["expr"], t.get("legendFormat") or "")
                                                for ti, t in targets(load_dashboard())])
def test_labels_in_the_dashboard_exist(title, expr, legend):
    names = metric_names(expr)
    assert names, f"{title}: no metric in {expr}"
    known = set(TARGET_LABELS).union(*(SAMPLES.get(n, set()) for n in names))
    for name, labels in selectors(expr):
        own = SAMPLES.get(name, known) | TARGET_LABELS if name else known
        assert labels <= own, f"{title}: {name} has no label {sorted(labels - own)} (it has {sorted(own)})"
    assert grouping_labels(expr) <= known, f"{title}: grouping by {sorted(grouping_labels(expr) - known)}"
    in_legend = set(re.findall(r"\{\{\s*(\w+)\s*\}\}", legend))
    assert in_legend <= known, f"{title}: legend uses {sorted(in_legend - known)}"
