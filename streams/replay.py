"""`intentflow replay`: behaviour events from a file onto the topics, at a chosen rate."""

from __future__ import annotations

import json
import time
from datetime import datetime, timezone
from pathlib import Path

from tqdm import tqdm

from processors.events import EventError, SearchBuyEvent
from processors.sources import read_rows, row_to_event
from streams.dlq import envelope
from streams.producer import EventProducer


def replay(path: str | Path, producer: EventProducer, *, topic: str | None = None, kind: str | None = None,
           rate: float | None = None, limit: int | None = None, progress: bool = True, now: bool = False) -> dict:
    """Validate and produce each row; invalid rows go to the DLQ with the reason. Returns counts.

    `now`: stamp each event with the time it is sent (history replayed as live traffic, so
    freshness is measured from the moment the behaviour "happens")."""
    counts = {"sent": 0, "invalid": 0, "search_buy": 0, "co_purchase": 0}
    t0 = time.monotonic()
    bar = tqdm(total=limit, unit="ev", desc=f"replay {Path(path).name}", disable=not progress, mininterval=0.5)
    for n, row in enumerate(read_rows(path), 1):
        if limit is not None and counts["sent"] + counts["invalid"] >= limit:
            break
        try:
            ev = row_to_event(row, kind)
        except EventError as e:
            raw = row.get("__raw__") or json.dumps(row, default=str)
            producer.send_raw(producer.topics.dlq, envelope(source_topic=f"file:{path}", partition=-1, offset=n, key=None,
                                                            value=raw.encode(), error=str(e), kind="invalid_event",
                                                            stage="replay"))
            counts["invalid"] += 1
        else:
            if now:
                ev = ev.model_copy(update={"event_time": datetime.now(timezone.utc)})
            producer.send(ev, topic)
            counts["sent"] += 1
            counts["search_buy" if isinstance(ev, SearchBuyEvent) else "co_purchase"] += 1
        bar.update(1)
        if rate:
            ahead = (counts["sent"] + counts["invalid"]) / rate - (time.monotonic() - t0)
            if ahead > 0:
                time.sleep(ahead)
    bar.close()
    counts["delivered"] = producer.flush()
    counts["seconds"] = round(time.monotonic() - t0, 3)
    return counts
