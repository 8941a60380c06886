"""Every benchmark of intentflow, in one place, each run by `intentflow bench NAME` and recorded in
docs/BENCHMARKS.md with the machine (CPU, flags, cores) and the command.

| NAME     | module    | environment | the real work measured                               | baseline in the same run              |
|----------|-----------|-------------|------------------------------------------------------|---------------------------------------|
| stream   | stream    | .venv       | events/s through sampling, dedup, batching (broker)   | a plain confluent-kafka consumer      |
| features | features  | .venv       | Feast pushes (rows/s) and online reads (latency)      | one row per push; Feast's own writer   |
| e2e      | e2e       | .venv       | event to Feast row: freshness, lag, RSS per worker    | the targets (freshness p95 30 s)      |
| faults   | faults    | .venv       | kill -9, broker and store outages: lost, duplicated  | the exact accounting (0 and 0)        |
| generate | generate  | .venv-ml    | pairs/s of the generation worker (vLLM)               | one call per batch; transformers loop |
| filter   | filter    | .venv-ml    | candidates/s through the filter; precision kept      | one candidate at a time               |

The .venv-ml ones run as `python -m streams.bench.NAME` in that environment (`intentflow bench`
starts them there): they import generators/ and never Faust. This package imports nothing that
either environment lacks.
"""

from __future__ import annotations

import os
import platform


def machine() -> str:
    """The machine a number was measured on: architecture, cores, CPU name, the CPU flags that
    decide model speed (generators/hardware.REPORTED_FLAGS), memory, Python."""
    from generators.hardware import REPORTED_FLAGS, cpu_flags, cpu_name

    flags = [f for f in REPORTED_FLAGS if f in cpu_flags()] or ["none of " + ", ".join(REPORTED_FLAGS)]
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (f"{platform.machine()}, {os.cpu_count()} cores ({cpu_name()}; flags {' '.join(flags)}), "
            f"{mem:.0f} GiB, Python {platform.python_version()}")
