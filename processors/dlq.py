"""Dead letters: the original bytes of a message that could not be processed, and why."""

from __future__ import annotations

import base64
import json
import time


def envelope(*, source_topic: str, partition: int, offset: int, key: bytes | None, value: bytes | None,
             error: str, kind: str, stage: str) -> bytes:
    """JSON with the reason and the original key/value (base64, and as text when it is UTF-8)."""
    def text(b: bytes | None) -> str | None:
        if b is None:
            return None
        try:
            return b.decode()
        except UnicodeDecodeError:
            return None

    return json.dumps({
        "error": error,
        "kind": kind,
        "stage": stage,
        "source_topic": source_topic,
        "partition": partition,
        "offset": offset,
        "failed_at": time.time(),
        "key_b64": base64.b64encode(key).decode() if key is not None else None,
        "value_b64": base64.b64encode(value).decode() if value is not None else None,
        "value_text": text(value),
    }).encode()


def original_value(env: dict) -> bytes | None:
    return base64.b64decode(env["value_b64"]) if env.get("value_b64") is not None else None
