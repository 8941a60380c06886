"""The engines' streaming interface without a model: per-item log-probs, queued and threaded groups."""

import pytest

from generators.engines import Completion, GenParams, QueuedEngine, ThreadedEngine, token_ends


def test_span_logprob_averages_only_the_tokens_of_one_item():
    text = " new parents\n2. zqx blorp\n"
    pieces = [" new", " parents", "\n", "2", ".", " zq", "x", " bl", "orp", "\n"]
    c = Completion(text, len(pieces), [-0.5, -0.7, -0.1, -0.1, -0.1, -6.0, -7.0, -8.0, -5.0, -0.2], "stop",
                   token_ends(pieces))
    first = text.index("new"), text.index("parents") + len("parents")
    second = text.index("zqx"), text.index("blorp") + len("blorp")
    assert c.span_logprob(*first) == pytest.approx(-0.6)
    assert c.span_logprob(*second) == pytest.approx(-6.5)
    assert Completion(text, 3, [-1.0, -1.0, -1.0]).span_logprob(*first) is None  # no offsets: unknown


class Fake:
    name, model = "fake", "m"

    def __init__(self, fail_on: str | None = None) -> None:
        self.calls, self.fail_on = [], fail_on

    def generate(self, prompts, params):
        self.calls.append(list(prompts))
        if self.fail_on and any(self.fail_on in p for p in prompts):
            raise RuntimeError("engine down")
        return [Completion(f"out:{p}", 1) for p in prompts]


def test_queued_groups_run_together_highest_priority_first():
    eng = Fake()
    q = QueuedEngine(eng)
    q.submit("a", ["a1", "a2"], GenParams())
    q.submit("b", ["b1"], GenParams(), priority=-1)
    assert q.pending() == 2
    done = dict(q.poll())
    assert eng.calls == [["b1", "a1", "a2"]]  # one call, the priority group first
    assert [c.text for c in done["a"]] == ["out:a1", "out:a2"] and q.pending() == 0


def test_a_failing_call_fails_its_groups_not_the_worker():
    q = QueuedEngine(Fake(fail_on="bad"))
    q.submit("x", ["bad"], GenParams())
    ((key, err),) = q.poll()
    assert key == "x" and isinstance(err, RuntimeError)


def test_threaded_groups_fail_alone():
    t = ThreadedEngine(Fake(fail_on="bad"), concurrency=2)
    t.submit("ok", ["fine"], GenParams())
    t.submit("ko", ["bad"], GenParams())
    got = {}
    while t.pending():
        got.update(t.poll(timeout=1.0))
    assert [c.text for c in got["ok"]] == ["out:fine"] and isinstance(got["ko"], RuntimeError)
