"""Training and evaluating the critic, and intent scoring on IntentionQA (task-1 format).

Training data are "problems": a context (the behaviour pair), several candidate explanations and
which one is right. IntentionQA task-1 rows are problems (the gold intention and three
distractors); imported annotations become problems too (a plausible candidate against implausible
ones for the same pair). The cross-encoder is fine-tuned from the bundled MiniLM with a listwise
loss (pick the right option) plus a pointwise one (right = plausible, distractor = not), so its
sigmoid reads as a plausibility for single candidates in the filter.
"""

from __future__ import annotations

import hashlib
import json
import random
import time
from pathlib import Path
from typing import Callable

from tqdm import tqdm


def load_problems(path: str | Path) -> list[dict]:
    """IntentionQA task-1 JSONL, or an imported annotation store, -> [{id, context, options, gold}]."""
    with open(path) as f:
        first = next((line for line in f if line.strip()), "")
    if first and "annotation_id" in json.loads(first):
        from generators.annotation import problems, read_jsonl, validate

        return problems(validate(read_jsonl(path)))
    out = []
    with open(path) as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            d = json.loads(line)
            keys = sorted(d["options"])
            if d.get("gold_ind") not in keys:
                raise ValueError(f"{path}:{n}: gold_ind {d.get('gold_ind')!r} is not one of the options {keys}")
            out.append({"id": d.get("id", str(n)), "context": problem_context(d["item_a_name"], d["item_b_name"]),
                        "options": [d["options"][k] for k in keys], "gold": keys.index(d["gold_ind"]), "raw": d})
    return out


def problem_context(a: str, b: str) -> str:
    # the same "A | B" form processors.filters.context_text gives a co-purchase candidate
    return f"{a[:200]} | {b[:200]}"


def split(problems: list[dict], holdout: float, seed: int) -> tuple[list[dict], list[dict]]:
    ps = sorted(problems, key=lambda p: hashlib.blake2b(f"{seed}:{p['id']}".encode(), digest_size=8).hexdigest())
    n = int(round(len(ps) * holdout))
    return ps[n:], ps[:n]


def accuracy(problems: list[dict], score: Callable[[list[str], list[str]], list[float]], batch: int = 32) -> float:
    """Share of problems whose best-scored option is the gold one (ties: the first)."""
    ok = 0
    for i in range(0, len(problems), batch):
        chunk = problems[i : i + batch]
        ctx = [p["context"] for p in chunk for _ in p["options"]]
        opts = [o for p in chunk for o in p["options"]]
        scores = score(ctx, opts)
        k = 0
        for p in chunk:
            s = scores[k : k + len(p["options"])]
            k += len(p["options"])
            ok += max(range(len(s)), key=s.__getitem__) == p["gold"]
    return ok / len(problems) if problems else 0.0


def train(data: str | Path, out: str | Path, *, holdout: float = 0.2, seed: int = 0, epochs: int = 3,
          lr: float = 5e-5, batch_problems: int = 8, max_length: int = 160, limit: int | None = None,
          pointwise_weight: float = 0.5, progress: bool = True) -> dict:
    import torch
    import torch.nn.functional as F
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from generators.models import minilm_dir

    torch.manual_seed(seed)
    problems = [p for p in load_problems(data) if len(p["options"]) >= 2]
    if limit:
        problems = problems[:limit]
    train_set, held = split(problems, holdout, seed)
    tok = AutoTokenizer.from_pretrained(minilm_dir())
    model = AutoModelForSequenceClassification.from_pretrained(minilm_dir(), num_labels=1)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    steps = epochs * ((len(train_set) + batch_problems - 1) // batch_problems)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / (0.1 * steps + 1)) * max(0.0, 1 - s / steps))

    def logits(ctx: list[str], opts: list[str]):
        enc = tok(ctx, opts, truncation=True, max_length=max_length, padding=True, return_tensors="pt")
        return model(**enc).logits.view(-1)

    t0 = time.time()
    rng = random.Random(seed)
    bar = tqdm(total=steps, desc="critic", unit="step", disable=not progress)
    for _ in range(epochs):
        model.train()
        rng.shuffle(train_set)
        for i in range(0, len(train_set), batch_problems):
            chunk = train_set[i : i + batch_problems]
            flat = logits([p["context"] for p in chunk for _ in p["options"]], [o for p in chunk for o in p["options"]])
            parts = flat.split([len(p["options"]) for p in chunk])
            listwise = sum(F.cross_entropy(s.unsqueeze(0), torch.tensor([p["gold"]])) for s, p in zip(parts, chunk))
            target = torch.tensor([float(j == p["gold"]) for p in chunk for j in range(len(p["options"]))])
            pointwise = F.binary_cross_entropy_with_logits(flat, target)
            loss = listwise / len(chunk) + pointwise_weight * pointwise
            loss.backward()
            opt.step()
            sched.step()
            opt.zero_grad()
            bar.update(1)
    bar.close()
    model.eval()

    def score(ctx: list[str], opts: list[str]) -> list[float]:
        with torch.no_grad():
            return logits(ctx, opts).tolist()

    # held-out: 4-way accuracy, and precision/recall of "plausible" at sigmoid >= 0.5 per option
    acc = accuracy(held, score)
    tp = fp = fn = 0
    for p in held:
        for j, s in enumerate(score([p["context"]] * len(p["options"]), p["options"])):
            pred, gold = s >= 0.0, j == p["gold"]
            tp += pred and gold
            fp += pred and not gold
            fn += (not pred) and gold
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    data_hash = hashlib.blake2b(Path(data).read_bytes(), digest_size=4).hexdigest()
    report = {
        "version": f"critic-{time.strftime('%Y%m%d-%H%M%S')}-{data_hash}",
        "base": "all-MiniLM-L6-v2", "data": str(data), "train_problems": len(train_set), "heldout_problems": len(held),
        "epochs": epochs, "seed": seed, "lr": lr, "pointwise_weight": pointwise_weight, "heldout_accuracy": round(acc, 4),
        "heldout_precision": round(tp / (tp + fp), 4) if tp + fp else 0.0,
        "heldout_recall": round(tp / (tp + fn), 4) if tp + fn else 0.0,
        "train_seconds": round(time.time() - t0, 1),
    }
    (out / "critic.json").write_text(json.dumps(report, indent=2))
    with open(out / "heldout.jsonl", "w") as f:
        for p in held:
            f.write(json.dumps(p["raw"]) + "\n")
    return report


def eval_intents(data: str | Path, scorer: str, critic_dir: str | None = None, engine=None) -> dict:
    """Accuracy of choosing the gold intention in IntentionQA task-1 problems with one scorer."""
    problems = load_problems(data)
    if scorer == "embedding":
        from generators.scorers import Embedder

        fn = Embedder().pair_scores
    elif scorer == "critic":
        from generators.scorers import Critic

        if not critic_dir:
            raise ValueError("--critic DIR is needed for the critic scorer (intentflow critic train ...)")
        c = Critic(critic_dir)
        fn = c.logits
    elif scorer == "selfeval":
        if engine is None:
            raise ValueError("the selfeval scorer needs a generation engine")

        def fn(ctx: list[str], opts: list[str]) -> list[float]:
            prompts = [f'A customer bought "{c.split(" | ")[0]}" and "{c.split(" | ")[-1]}" together, {o}\n'
                       "Is this explanation reasonable? Answer YES or NO.\nAnswer:" for c, o in zip(ctx, opts)]
            return engine.yes_no(prompts)
    else:
        raise ValueError(f"unknown scorer {scorer!r}: critic, selfeval or embedding")
    return {"scorer": scorer, "n": len(problems), "accuracy": round(accuracy(problems, fn), 4), "data": str(data)}
