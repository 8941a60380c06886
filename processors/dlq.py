"""Dead letters: the original bytes of a message that could not be processed, and why.

One envelope for every stage on both sides (the stream worker, replay, the generation and filter
workers): the reason, its kind, the stage, where the message came from, and the original key and
value (base64, and as text when it is UTF-8), so `intentflow dlq` tools can re-drive it."""

from __future__ import annotations

import base64
import json
import time

from pydantic import ValidationError

from processors.contracts import DeadLetter


def envelope(*, source_topic: str | None, partition: int | None, offset: int | None, key: bytes | None,
             value: bytes | None, error: str, kind: str, stage: str, **extra: object) -> bytes:
    """processors.contracts.DeadLetter as JSON: the reason and the original key/value (base64, and as
    text when it is UTF-8); `extra` keys (a request's id, its batch) are kept."""
    def text(b: bytes | None) -> str | None:
        if b is None:
            return None
        try:
            return b.decode()
        except UnicodeDecodeError:
            return None

    return DeadLetter(
        error=error, kind=kind, stage=stage, source_topic=source_topic, partition=partition, offset=offset,
        failed_at=time.time(), key_b64=base64.b64encode(key).decode() if key is not None else None,
        value_b64=base64.b64encode(value).decode() if value is not None else None, value_text=text(value),
        **extra).model_dump_json().encode()


class NotRedrivable(ValueError):
    """A dead letter that cannot be sent back: no source topic or no original value."""


def redrive(env: dict, now: float | None = None) -> tuple[str, bytes | None, bytes]:
    """(topic, key, value) that sends a dead letter back where it failed. A generation request
    dead-lettered alone (its envelope names `request_id`) goes back wrapped in a micro-batch of
    one, as the generation worker reads batches. Raises NotRedrivable."""
    try:
        env = DeadLetter.model_validate(env).model_dump()
    except ValidationError as e:
        raise NotRedrivable(f"not a dead letter: {e.errors(include_url=False)[0]['msg']}") from e
    topic, value = env.get("source_topic"), env.get("value_b64")
    if not topic or value is None:
        raise NotRedrivable(f"dead letter without {'source_topic' if not topic else 'original value'}")
    if topic.startswith("file:"):  # streams/replay.py: a row of a file, not a message of a topic
        raise NotRedrivable(f"a row of {topic[5:]} ({env.get('error')}): fix the file and replay it")
    key = base64.b64decode(env["key_b64"]) if env.get("key_b64") else None
    raw = base64.b64decode(value)
    if env.get("stage") == "generate" and env.get("request_id"):
        request = json.loads(raw)
        batch_id = f"redrive-{env['request_id']}-{int((now or time.time()) * 1000)}"
        raw = json.dumps({"batch_id": batch_id, "created_at": now or time.time(), "requests": [request]}).encode()
        key = batch_id.encode()
    return topic, key, raw
