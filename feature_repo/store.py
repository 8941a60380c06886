"""Open the Feast store from intentflow's settings, and register the definitions.

The same objects as feature_store.yaml, built in code so that INTENTFLOW_FEATURES__* chooses the
online store (Redis, or SQLite for the embedded demo) and where the registry and Parquet live.
"""

from __future__ import annotations

import logging
from pathlib import Path

from feast import FeatureStore, RepoConfig

from feature_repo import definitions, offline
from processors.features import FeatureConfig

log = logging.getLogger("intentflow.features")
PROJECT = "intentflow"


def repo_dir(cfg: FeatureConfig, data_dir: str) -> Path:
    return Path(cfg.repo_dir or f"{data_dir}/feast").resolve()


def registry_path(cfg: FeatureConfig, data_dir: str) -> Path:
    return repo_dir(cfg, data_dir) / "registry.db"


def repo_config(cfg: FeatureConfig, data_dir: str, redis_port: int) -> RepoConfig:
    root = repo_dir(cfg, data_dir)
    if cfg.online == "redis":
        online = {"type": "redis", "connection_string": cfg.redis or f"127.0.0.1:{redis_port}",
                  "skip_dedup": not cfg.online_order_check}
    else:
        online = {"type": "sqlite", "path": str(root / "online.db")}
    return RepoConfig(project=PROJECT, provider="local", registry=str(registry_path(cfg, data_dir)), online_store=online,
                      offline_store={"type": "feature_repo.offline.PartsFileOfflineStore",
                                     "compact_parts": cfg.offline_compact_parts,
                                     "compact_part_mb": cfg.offline_compact_part_mb},
                      entity_key_serialization_version=3, repo_path=str(root))


def open_store(cfg: FeatureConfig, data_dir: str, redis_port: int, apply: bool = True) -> FeatureStore:
    """The feature store; with `apply`, the definitions are registered first (idempotent)."""
    config = repo_config(cfg, data_dir, redis_port)
    Path(config.repo_path).mkdir(parents=True, exist_ok=True)
    store = FeatureStore(config=config, repo_path=str(config.repo_path))
    if apply:
        store.apply(definitions.OBJECTS)
        for name in definitions.VIEWS:
            offline.ensure_folder(config, store.get_feature_view(name))
        log.info("feast definitions applied in %s (online: %s)", config.repo_path, cfg.online)
    return store
