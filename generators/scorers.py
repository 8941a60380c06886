"""Batched scorers for the model-based filter stages (processors/filters.py takes them as functions).

- Embedder: all-MiniLM-L6-v2 sentence embeddings (bundled), cosine of a tail to its context.
- Critics (generators/critic.py trains them; `load_critic(dir)` loads the kind critic.json names):
  LogRegCritic, a logistic-regression head over frozen MiniLM embeddings of (context, statement),
  the default; Critic, a MiniLM cross-encoder over the pair fine-tuned on labels. The sigmoid of
  either's logit is the plausibility.
- Self-evaluation: E-CARE's P(YES) - P(NO) from a generation engine's log-probs.
"""

from __future__ import annotations

import json
from pathlib import Path

from prometheus_client import Counter

from generators.sentences import fluency_prefix, statement
from processors.filters import context_text

EMBED_CACHE = Counter("intentflow_embedding_cache_total", "texts the paraphrase stage needed embedded: from the cache or encoded",
                      ["result"])


def encoder_dtype(setting: str = "auto"):
    """The torch dtype for the MiniLM encoders and the fluency LM (generators/hardware.py):
    bfloat16 where the CPU multiplies it natively (AMX or AVX512-BF16), else float32."""
    from generators.hardware import torch_dtype

    return torch_dtype(setting)


class Embedder:
    def __init__(self, model_dir: str | None = None, batch_size: int = 128, dtype: str = "auto",
                 cache_size: int = 20000) -> None:
        from collections import OrderedDict

        from sentence_transformers import SentenceTransformer

        from generators.models import minilm_dir

        self.cache: OrderedDict[str, object] = OrderedDict()
        self.cache_size, self.hits, self.misses = cache_size, 0, 0

        self.model = SentenceTransformer(str(model_dir or minilm_dir()), device="cpu")
        self.model.to(encoder_dtype(dtype))
        self.batch_size = batch_size

    def encode(self, texts: list[str]):
        import torch

        emb = self.model.encode(texts, batch_size=self.batch_size, normalize_embeddings=True, convert_to_tensor=True)
        return emb.to(torch.float32).numpy()

    def encode_unique(self, texts: list[str]):
        """Encode each distinct text once, and remember it: a request's candidates share one context
        (often spread over consecutive micro-batches), and tails recur across products."""
        import numpy as np

        todo = [t for t in dict.fromkeys(texts) if t not in self.cache]
        self.hits += len(texts) - len(todo)
        self.misses += len(todo)
        EMBED_CACHE.labels("hit").inc(len(texts) - len(todo))
        EMBED_CACHE.labels("miss").inc(len(todo))
        if todo:
            for t, v in zip(todo, self.encode(todo)):
                self.cache[t] = v
        out = np.stack([self.cache[t] for t in texts])
        for t in todo:  # LRU: the newest at the end, the oldest dropped past cache_size
            self.cache.move_to_end(t)
        while len(self.cache) > self.cache_size:
            self.cache.popitem(last=False)
        return out

    def similarity(self, items: list[dict]) -> list[float]:
        a = self.encode_unique([i["tail"] for i in items])
        b = self.encode_unique([context_text(i) for i in items])
        return [float(x) for x in (a * b).sum(axis=1)]

    def pair_scores(self, contexts: list[str], options: list[str]) -> list[float]:
        a, b = self.encode(contexts), self.encode(options)
        return [float(x) for x in (a * b).sum(axis=1)]


FEATURES = ["a*b", "|a-b|", "b", "cos"]  # a = emb(context), b = emb(statement), both unit length


def pair_features(a, b):
    """The logistic-regression critic's features of (context, statement) embeddings, one row per pair."""
    import numpy as np

    a, b = np.asarray(a, dtype="float32"), np.asarray(b, dtype="float32")
    return np.hstack([a * b, np.abs(a - b), b, (a * b).sum(axis=1, keepdims=True)])


def critic_kind(model_dir: str | Path) -> str:
    """The kind a critic folder's critic.json names (folders from before kinds: cross-encoder)."""
    return json.loads((Path(model_dir) / "critic.json").read_text()).get("kind", "cross-encoder")


def load_critic(model_dir: str | Path | None, dtype: str = "auto", embedder: "Embedder | None" = None):
    """The critic in a folder, of the kind its critic.json names; None for no folder. `embedder`
    (the paraphrase stage's, or anything with `encode_unique(texts) -> unit vectors`) lets the
    logistic-regression critic share its model and cache."""
    if model_dir is None:
        return None
    if critic_kind(model_dir) == "logreg":
        return LogRegCritic(str(model_dir), dtype=dtype, embedder=embedder)
    return Critic(str(model_dir), dtype=dtype)


class LogRegCritic:
    """A logistic-regression head (head.npz: weights over FEATURES, bias) over frozen MiniLM
    sentence embeddings of the context and the statement."""

    kind = "logreg"

    def __init__(self, model_dir: str, dtype: str = "auto", embedder: Embedder | None = None) -> None:
        import logging

        import numpy as np

        from generators.hardware import choose_dtype

        self.dir = Path(model_dir)
        meta = json.loads((self.dir / "critic.json").read_text())
        if meta.get("features") != FEATURES:
            raise ValueError(f"{model_dir}: features {meta.get('features')} are not this code's {FEATURES}: retrain it")
        if meta.get("dtype") and meta["dtype"] != choose_dtype(dtype):
            logging.getLogger(__name__).warning("critic %s was trained on %s embeddings, running in %s", model_dir,
                                                meta["dtype"], choose_dtype(dtype))
        head = np.load(self.dir / "head.npz", allow_pickle=False)
        self.weights, self.bias = head["weights"].astype("float32"), float(head["bias"][0])
        self.version = meta["version"]
        self.embed = (embedder or Embedder(dtype=dtype)).encode_unique

    @classmethod
    def from_parts(cls, weights, bias: float, version: str, embed) -> "LogRegCritic":
        """A critic from parameters in memory; `embed(texts) -> unit vectors`."""
        self = cls.__new__(cls)
        self.dir, self.weights, self.bias, self.version, self.embed = None, weights, float(bias), version, embed
        return self

    def logits(self, contexts: list[str], texts: list[str]) -> list[float]:
        if not texts:
            return []
        x = pair_features(self.embed(contexts), self.embed(texts)) @ self.weights + self.bias
        return [float(v) for v in x]

    def plausibility(self, items: list[dict]) -> list[float]:
        import numpy as np

        x = np.asarray(self.logits([context_text(i) for i in items], [statement(i) for i in items]), dtype="float64")
        return [float(v) for v in 1 / (1 + np.exp(-x))]


class Critic:
    """A trained cross-encoder folder (with critic.json naming its version). `Critic(dir)` on a
    folder of another kind gives that kind's critic (load_critic)."""

    kind = "cross-encoder"

    def __new__(cls, model_dir: str, *args, **kwargs):
        if cls is Critic and critic_kind(model_dir) != "cross-encoder":
            return load_critic(model_dir, dtype=kwargs.get("dtype", "auto"))
        return super().__new__(cls)

    def __init__(self, model_dir: str, batch_size: int = 64, max_length: int = 160, dtype: str = "auto") -> None:
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        self.torch = torch
        self.dir = Path(model_dir)
        meta = json.loads((self.dir / "critic.json").read_text())
        self.version = meta["version"]
        self.tok = AutoTokenizer.from_pretrained(model_dir)
        self.model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval().to(encoder_dtype(dtype))
        self.batch_size, self.max_length = batch_size, max_length

    def logits(self, contexts: list[str], texts: list[str]) -> list[float]:
        out: list[float] = []
        with self.torch.no_grad():
            for i in range(0, len(texts), self.batch_size):
                enc = self.tok(contexts[i : i + self.batch_size], texts[i : i + self.batch_size], truncation=True,
                               max_length=self.max_length, padding=True, return_tensors="pt")
                out.extend(self.model(**enc).logits.float().view(-1).tolist())
        return out

    def plausibility(self, items: list[dict]) -> list[float]:
        import math

        return [1 / (1 + math.exp(-x)) for x in self.logits([context_text(i) for i in items], [statement(i) for i in items])]


class SelfEval:
    def __init__(self, engine) -> None:
        self.engine = engine

    def score(self, items: list[dict]) -> list[float]:
        from generators.prompts import self_eval_prompt

        def ctx(i: dict) -> dict:
            if i["behavior"] == "search_buy":
                return {"query": i.get("query") or "", "title": i.get("product_title") or ""}
            return {"a": i.get("product_a_title") or "", "b": i.get("product_b_title") or ""}

        return self.engine.yes_no([self_eval_prompt(ctx(i), i["behavior"], i["relation"], i["tail"]) for i in items])


class LMFluency:
    """Mean token log-prob of a tail after its relation's wording, under a small causal LM
    (SmolLM2 by default): malformed and run-on text scores low. One forward pass per batch."""

    def __init__(self, model_dir: str | None = None, batch_size: int = 32, dtype: str = "auto") -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from generators.models import smollm2_dir

        path = str(model_dir or smollm2_dir(dtype if dtype != "auto" else None))
        self.torch = torch
        self.tok = AutoTokenizer.from_pretrained(path)
        if self.tok.pad_token is None:
            self.tok.pad_token = self.tok.eos_token
        self.lm = AutoModelForCausalLM.from_pretrained(path, dtype=encoder_dtype(dtype)).eval()
        self.batch_size = batch_size

    def score(self, items: list[dict]) -> list[float]:
        out: list[float] = []
        for i in range(0, len(items), self.batch_size):
            out.extend(self._score(items[i : i + self.batch_size]))
        return out

    def _score(self, items: list[dict]) -> list[float]:
        torch = self.torch
        prefixes = [fluency_prefix(i) for i in items]
        pre = [self.tok(p, add_special_tokens=False)["input_ids"] for p in prefixes]
        tail = [self.tok(" " + i["tail"], add_special_tokens=False)["input_ids"] for i in items]
        seqs = [p + t for p, t in zip(pre, tail)]
        width = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), width), self.tok.pad_token_id)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for j, s in enumerate(seqs):
            ids[j, : len(s)] = torch.tensor(s)
            mask[j, : len(s)] = 1
        with torch.no_grad():
            lp = torch.log_softmax(self.lm(input_ids=ids, attention_mask=mask).logits.float(), dim=-1)
        res = []
        for j, (p, t) in enumerate(zip(pre, tail)):
            if not t:
                res.append(-99.0)
                continue
            pos = range(len(p), len(p) + len(t))  # token k is predicted at position k - 1
            res.append(float(sum(lp[j, k - 1, ids[j, k]] for k in pos) / len(t)))
        return res
