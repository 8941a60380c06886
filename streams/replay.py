"""`intentflow replay`: behaviour events from a file onto the topics, at a chosen rate."""

from __future__ import annotations

import json
import time
from datetime import datetime, timezone
from pathlib import Path

import click
from tqdm import tqdm

from processors.events import EventError, SearchBuyEvent, future_error
from processors.sources import Row, SourceError, read_rows, row_to_event
from processors.dlq import envelope
from streams.producer import EventProducer

DLQ_RAW_MAX = 256 * 1024  # characters of a bad row's text kept in its dead letter (brokers take ~1 MB)


class ReplayError(SourceError, click.ClickException):
    """The file cannot be read: `intentflow replay` prints the message and exits 1."""

    def __init__(self, message: str) -> None:
        SourceError.__init__(self, message)
        click.ClickException.__init__(self, message)


def replay(path: str | Path, producer: EventProducer, *, topic: str | None = None, kind: str | None = None,
           rate: float | None = None, limit: int | None = None, progress: bool = True, now: bool = False) -> dict:
    """Validate and produce each row; invalid rows go to the DLQ with the reason. Returns counts:
    {"sent", "invalid", "search_buy", "co_purchase", "delivered", "seconds"}.

    A bad row never stops the replay: it becomes a dead letter (stage "replay", offset = its line or
    row number) whose error starts with its place ("line 7: ..."). That includes an event_time more
    than `sampling.max_future_skew_s` after the wall clock (unless `now`), which the broker may refuse
    and the worker would dead-letter anyway. Raises ReplayError (a SourceError and a
    click.ClickException) when the file itself cannot be read, after flushing what was sent; and
    streams.producer.DeliveryError from the final flush when the broker did not take every message.

    `now`: stamp each event with the time it is sent (history replayed as live traffic, so
    freshness is measured from the moment the behaviour "happens")."""
    counts = {"sent": 0, "invalid": 0, "search_buy": 0, "co_purchase": 0}
    skew = producer.settings.sampling.max_future_skew_s
    t0 = time.monotonic()
    bar = tqdm(total=limit, unit="ev", desc=f"replay {Path(path).name}", disable=not progress, mininterval=0.5)
    try:
        for row in read_rows(path):
            if limit is not None and counts["sent"] + counts["invalid"] >= limit:
                break
            error = None
            try:
                ev = row_to_event(row, kind)
                if now:
                    ev = ev.model_copy(update={"event_time": datetime.now(timezone.utc)})
                else:
                    why = future_error(ev, time.time(), skew)
                    if why:
                        raise EventError(f"{row.where}: {why}" if row.where else why)
                producer.send(ev, topic)
            except EventError as e:
                error = str(e)
            except Exception as e:  # the client refused it (e.g. too large): still one row, not the replay
                error = f"{row.where}: not produced: {e!r}"
            if error is None:
                counts["sent"] += 1
                counts["search_buy" if isinstance(ev, SearchBuyEvent) else "co_purchase"] += 1
            else:
                _dead_letter(producer, path, row, error)
                counts["invalid"] += 1
            bar.update(1)
            if rate:
                ahead = (counts["sent"] + counts["invalid"]) / rate - (time.monotonic() - t0)
                if ahead > 0:
                    time.sleep(ahead)
    except SourceError as e:
        bar.close()
        producer.flush()
        raise ReplayError(str(e)) from None
    bar.close()
    counts["delivered"] = producer.flush()
    counts["seconds"] = round(time.monotonic() - t0, 3)
    return counts


def _dead_letter(producer: EventProducer, path: str | Path, row: Row, error: str) -> None:
    """The row's original text (or its fields as JSON) and the reason onto the DLQ."""
    raw = row.raw if row.raw is not None else json.dumps(row.fields, default=str)
    if len(raw) > DLQ_RAW_MAX:
        raw, error = raw[:DLQ_RAW_MAX], f"{error} (row text cut to its first {DLQ_RAW_MAX} characters)"
    try:  # undecodable bytes of a UTF-8 file come back as they were
        value = raw.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        value = raw.encode("utf-8", "replace")
    for attempt in (value, None):  # without the row if the client refuses even that
        try:
            producer.send_raw(producer.topics.dlq, envelope(
                source_topic=f"file:{path}", partition=-1, offset=row.number, key=None, value=attempt,
                error=error if attempt is not None else f"{error} (row text not attached: refused)",
                kind="invalid_event", stage="replay"))
            return
        except Exception:  # noqa: BLE001 - a dead letter must not end the replay
            if attempt is None:
                raise
