"""Settings of the ML-side workers: the project's one settings model (infra/settings.py).

`MLSettings` is `infra.settings.Settings` under the name the ML side has always used; the stream
side loads the same class from the same INTENTFLOW_* environment.
"""

from __future__ import annotations

from infra.settings import GenerationConfig, Groups, KafkaSecurity, Settings, Topics

MLSettings = Settings

__all__ = ["GenerationConfig", "Groups", "KafkaSecurity", "MLSettings", "Topics"]
