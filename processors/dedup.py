"""Dedup of generation requests and their micro-batching."""

from __future__ import annotations

import time
from typing import MutableMapping

from processors.config import DedupConfig
from processors.events import stable_id
from processors.requests import GenerationBatch, GenerationRequest


def admit(req: GenerationRequest, partition: int, offset: int, sent: MutableMapping[str, dict], cfg: DedupConfig) -> str:
    """Decide whether a request goes to generation: 'admitted', 'readmitted', 'duplicate' or 'recent'.

    `sent` remembers, per pair, the request last admitted, the message that carried it and whether
    its batch was acknowledged by the broker (`mark_batched`). The same message seen again is a
    redelivery after a crash: admitted again only if its batch was not acknowledged (generation
    dedups by request id in the rare case it went out anyway). The same request on another message
    is a re-send from upstream and is dropped; another request for the pair within the TTL too.
    """
    prev = sent.get(req.pair_key)
    if prev is not None:
        if prev["rid"] == req.request_id:
            same_message = (prev["pt"], prev["off"]) == (partition, offset)
            return "readmitted" if same_message and not prev.get("b") else "duplicate"
        if req.event_time - prev["at"] < cfg.ttl_s:
            return "recent"
    sent[req.pair_key] = {"rid": req.request_id, "at": req.event_time, "pt": partition, "off": offset}
    return "admitted"


def mark_batched(req: GenerationRequest, sent: MutableMapping[str, dict]) -> None:
    """Record that the batch holding this request was acknowledged by the broker."""
    prev = sent.get(req.pair_key)
    if prev is not None and prev["rid"] == req.request_id:
        sent[req.pair_key] = {**prev, "b": True}


def make_batches(reqs: list[GenerationRequest], max_size: int, priority: bool = False) -> list[GenerationBatch]:
    """Highest priority first (broad queries before specific ones), at most max_size per batch."""
    ordered = sorted(reqs, key=lambda r: -r.priority)
    now = time.time()
    out = []
    for i in range(0, len(ordered), max_size):
        chunk = ordered[i : i + max_size]
        out.append(
            GenerationBatch(
                batch_id=stable_id(*(r.request_id for r in chunk)),
                created_at=now,
                priority=priority,
                requests=chunk,
            )
        )
    return out
