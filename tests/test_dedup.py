from processors.config import DedupConfig
from processors.dedup import admit, make_batches, mark_batched
from processors.requests import GenerationRequest


def req(rid, pair="sb|q|p", t=0.0, priority=0.5):
    return GenerationRequest(request_id=rid, pair_key=pair, behavior="search_buy", query="q", event_id="e",
                             event_time=t, priority=priority)


def test_dedup_by_pair_within_ttl_and_readmit_on_redelivery():
    sent, cfg = {}, DedupConfig(ttl_s=100)
    assert admit(req("r1"), 0, 10, sent, cfg) == "admitted"
    assert admit(req("r1"), 0, 10, sent, cfg) == "readmitted"   # same message after a crash
    assert admit(req("r1"), 0, 11, sent, cfg) == "duplicate"    # upstream re-send
    assert admit(req("r2", t=50), 0, 12, sent, cfg) == "recent"
    assert admit(req("r3", t=150), 0, 13, sent, cfg) == "admitted"
    assert admit(req("x", pair="sb|other|p"), 0, 14, sent, cfg) == "admitted"


def test_batches_are_bounded_and_broad_first():
    reqs = [req(f"r{i}", pair=f"p{i}", priority=i / 10) for i in range(7)]
    batches = make_batches(reqs, 3)
    assert [len(b.requests) for b in batches] == [3, 3, 1]
    assert batches[0].request_ids == ["r6", "r5", "r4"]
    assert len({b.batch_id for b in batches}) == 3


def test_redelivery_of_an_acknowledged_batch_is_not_batched_again():
    sent, cfg = {}, DedupConfig()
    r = req("r1")
    assert admit(r, 0, 10, sent, cfg) == "admitted"
    mark_batched(r, sent)
    assert admit(r, 0, 10, sent, cfg) == "duplicate"
    mark_batched(req("other"), sent)  # another request id for the pair changes nothing
    assert sent["sb|q|p"]["rid"] == "r1"
