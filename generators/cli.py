"""ML-side commands, run in .venv-ml (`.venv/bin/intentflow generate ...` forwards here)."""

from __future__ import annotations

import json
import logging

import click


@click.group()
def main() -> None:
    """Generation workers, model bootstrap and the generation benchmark."""
    logging.basicConfig(level=logging.INFO, format='{"time":"%(asctime)s","level":"%(levelname)s","logger":"%(name)s","msg":"%(message)s"}')


@main.command()
def bootstrap() -> None:
    """Convert the bundled SmolLM2 GGUF to a safetensors folder (once) and locate MiniLM."""
    from generators.models import minilm_dir, smollm2_dir

    click.echo(json.dumps({"smollm2": str(smollm2_dir()), "minilm": str(minilm_dir())}))


@main.command()
@click.option("--engine", default=None, help="vllm | openai | transformers (default: INTENTFLOW_GENERATION__ENGINE)")
@click.option("--model", default=None)
@click.option("--max-batches", type=int, default=None, help="stop after this many batches")
@click.option("--idle-exit", type=float, default=None, help="stop after this many idle seconds")
@click.option("--json", "as_json", is_flag=True)
def worker(engine: str | None, model: str | None, max_batches: int | None, idle_exit: float | None, as_json: bool) -> None:
    """Consume generation.batches, generate, parse, publish knowledge.candidates."""
    from generators.config import MLSettings
    from generators.engines import make_engine
    from generators.worker import GenerationWorker

    s = MLSettings()
    if s.metrics_port:
        from prometheus_client import start_http_server

        start_http_server(s.metrics_port, addr="127.0.0.1")
    g = s.generation
    kw = {"base_url": g.base_url} if (engine or g.engine) == "openai" else {}
    eng = make_engine(engine or g.engine, model or g.model, **kw)
    stats = GenerationWorker(eng, s).run(max_batches=max_batches, idle_exit_s=idle_exit)
    click.echo(json.dumps(dict(stats)) if as_json else "\n".join(f"{k}: {v}" for k, v in sorted(stats.items())))


@main.command()
@click.option("--prompts", "n", default=64, show_default=True)
@click.option("--max-tokens", default=48, show_default=True)
@click.option("--json", "as_json", is_flag=True)
def bench(n: int, max_tokens: int, as_json: bool) -> None:
    """vLLM batched vs a one-prompt-at-a-time transformers loop, same prompts and model."""
    from generators.bench import run

    out = run(n, max_tokens)
    click.echo(json.dumps(out) if as_json else json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
