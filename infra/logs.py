"""Structured (JSON lines) logging, one setup for both environments: the Faust worker and the
stream commands (`logging_config` is Faust's `logging_config`) and the ML workers
(generators/cli.py calls `setup`). infra/ is imported by both sides, streams/ only by one."""

from __future__ import annotations

import json
import logging
import logging.config
import time

_RESERVED = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """One JSON object per record: any message text (quotes, newlines, any script) stays valid JSON;
    fields passed with `extra=` become keys of their own."""

    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": round(record.created, 3),
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        out.update({k: v for k, v in vars(record).items() if k not in _RESERVED and not k.startswith("_")})
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def logging_config(level: str = "INFO", as_json: bool = True) -> dict:
    fmt = {"()": "infra.logs.JsonFormatter"} if as_json else {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"default": fmt},
        "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "default", "stream": "ext://sys.stderr"}},
        "root": {"level": level.upper(), "handlers": ["stderr"]},
        # aiokafka's per-batch debug lines cost ~2% of a busy worker even when filtered late
        "loggers": {"aiokafka": {"level": "WARNING"}},
    }


def setup(level: str = "INFO", as_json: bool = True) -> None:
    """Configure the root logger of a process that has no framework doing it (the ML workers)."""
    logging.config.dictConfig(logging_config(level, as_json))
