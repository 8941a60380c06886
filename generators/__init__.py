"""Prompts, relation vocabulary, output parsing, LLM engines and scorers (issue 3)."""
