"""Structured (JSON lines) logging for workers and commands."""

from __future__ import annotations

import json
import logging
import time

_RESERVED = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
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
    fmt = {"()": "streams.logs.JsonFormatter"} if as_json else {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}
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
    import logging.config

    logging.config.dictConfig(logging_config(level, as_json))
