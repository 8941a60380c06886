"""The OpenAI-compatible engine against a server that validates requests as vLLM's does."""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from generators.engines import MAX_STOP, Completion, EngineUnavailable, GenParams, OpenAIEngine, cut_at_stops

# what the model "writes": three items, then a fourth the worker's stop strings end before
TEXT = " keep feet dry\n2. walk in snow\n3. stay warm\n4. look good\n\nSearch: boots"
PIECES = [" keep", " feet", " dry", "\n", "2", ".", " walk", " in", " snow", "\n", "3", ".", " stay", " warm", "\n",
          "4", ".", " look", " good", "\n\n", "Search", ":", " boots"]


class _Server(BaseHTTPRequestHandler):
    bodies: list = []
    errors: list = []  # status codes answered first, one per request (a busy or restarting server)

    def do_POST(self):  # noqa: N802 - http.server's name
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.bodies.append(body)
        if self.errors:
            code = self.errors.pop(0)
            return self._send(code, {"error": {"message": f"status {code}", "type": "busy" if code == 429 else "x"}})
        stop = body.get("stop") or []
        if not isinstance(stop, (str, list)) or isinstance(stop, list) and len(stop) > 4:
            # vLLM 0.32's server: "List should have at most 4 items after validation"
            return self._send(400, {"error": {"message": f"body.stop: at most 4 items, not {len(stop)}"}})
        stops = [stop] if isinstance(stop, str) else stop
        cut = min((i for i in (TEXT.find(s) for s in stops) if i >= 0), default=len(TEXT))
        pieces, n = [], 0
        for p in PIECES:  # the tokens up to the one the stop string begins in, as vLLM returns them
            if n >= cut:
                break
            pieces.append(p)
            n += len(p)
        if self.path.endswith("/chat/completions"):
            return self._send(200, {"choices": [{"index": 0, "message": {"content": TEXT[:cut]}, "finish_reason": "stop",
                                                 "logprobs": {"content": [{"logprob": -0.5} for _ in pieces]}}]})
        return self._send(200, {"choices": [{"index": i, "text": TEXT[:cut], "finish_reason": "stop",
                                             "logprobs": {"tokens": pieces, "token_logprobs": [-0.5] * len(pieces)}}
                                            for i in range(len(body["prompt"]))]})

    def _send(self, code, obj):
        data = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Server)
    _Server.bodies, _Server.errors = [], []
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


# the generation worker's stop strings (generators.worker.gen_params): six, more than a server takes
STOPS = ("\n\n", "Search:", "\nBought", "\nThe product", "\nBoth products", "\n4.")


def test_more_stop_strings_than_the_server_takes_are_applied_to_the_text(server):
    """Found by `intentflow bench faults --schedule full`: with the engine in a `vllm serve` process,
    every request of the worker was refused (400: at most 4 stop strings) and dead-lettered."""
    eng = OpenAIEngine(server, "smollm2", retry_for_s=1)
    (out,) = eng.generate(["Explain:\n1."], GenParams(stop=STOPS))
    assert len(_Server.bodies[-1]["stop"]) == MAX_STOP == 4
    assert out.text == " keep feet dry\n2. walk in snow\n3. stay warm"  # cut at "\n4.", applied here
    assert out.finish_reason == "stop" and out.n_tokens == len(out.token_logprobs) == 14
    assert out.token_ends[-1] == len(out.text)
    (chat,) = eng.generate(["Explain:\n1."], GenParams(stop=STOPS, chat=True))
    assert len(_Server.bodies[-1]["stop"]) == 4 and chat.text == out.text


def test_cut_at_stops_keeps_the_tokens_that_begin_before_the_cut():
    c = Completion("ab\n4. cd", 4, [-1.0, -2.0, -3.0, -4.0], "length", [2, 4, 6, 9])
    cut = cut_at_stops(c, ["\n4."])
    assert (cut.text, cut.token_logprobs, cut.token_ends, cut.finish_reason) == ("ab", [-1.0], [2], "stop")
    assert cut_at_stops(c, ["zz"]) is c
    assert cut_at_stops(Completion("ab\n4.", 2, [-1.0, -2.0]), ["\n4."]).text == "ab"  # no offsets: text only


def test_busy_timed_out_and_failing_servers_are_retried_a_bad_request_is_not(server):
    """HTTP 408 and 429 (and 5xx) are the server's state, not the request's: retried with backoff,
    never dead-lettered as malformed; another 4xx is the request's fault and raises at once."""
    eng = OpenAIEngine(server, "smollm2", retry_for_s=30)
    _Server.errors = [429, 408, 503]
    (out,) = eng.generate(["Explain:\n1."], GenParams(stop=STOPS))
    assert out.text.startswith(" keep feet dry") and len(_Server.bodies) == 4  # three refusals, then the answer
    _Server.errors = [400]
    with pytest.raises(ValueError, match="rejected the request: 400"):
        eng.generate(["Explain:\n1."], GenParams(stop=STOPS))
    assert len(_Server.bodies) == 5  # not retried
    _Server.errors = [429] * 10
    with pytest.raises(EngineUnavailable, match="HTTP 429"):
        OpenAIEngine(server, "smollm2", retry_for_s=0.6).generate(["Explain:\n1."], GenParams(stop=STOPS))
