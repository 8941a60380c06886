"""`intentflow filter FILE`: hand-written candidates as people write them (found by a tester: a
file with a BOM was refused, a line holding a JSON array was a traceback, an unknown behaviour said
"missing []", an unknown relation and a numeric tail went through to the model stages)."""

import json

from click.testing import CliRunner

from generators.cli import candidate_problems, main


def test_each_problem_of_a_candidate_line_is_named():
    assert candidate_problems({"behavior": "search_buy", "query": "q", "relation": "xWant", "tail": "stay dry"}) == []
    assert candidate_problems([1, 2, 3]) == ["a JSON object per line, not list"]
    assert candidate_problems(None) == ["a JSON object per line, not NoneType"]
    assert candidate_problems({"behavior": "teleport", "relation": "capableOf_hacking", "tail": 42}) == [
        "behavior 'teleport': search_buy or co_purchase", "unknown relation 'capableOf_hacking' (generators/relations.py)",
        "tail must be text, not int"]
    assert candidate_problems({"behavior": "search_buy", "relation": "xWant", "tail": "x"}) == [
        "a search_buy candidate needs its query"]


def test_a_file_with_a_bom_is_read_and_bad_lines_are_listed_before_any_model_loads(tmp_path):
    good = {"behavior": "search_buy", "query": "rain boots", "relation": "xWant", "tail": "stay dry"}
    path = tmp_path / "c.jsonl"
    path.write_text("\ufeff" + json.dumps(good) + "\n[1, 2, 3]\nnull\n{\"behavior\": \"teleport\"}\n", encoding="utf-8")
    r = CliRunner().invoke(main, ["filter", str(path), "--json"])
    assert r.exit_code == 1, r.output  # a ClickException: the reasons, no traceback
    assert "c.jsonl:1" not in r.output  # the BOM line is a good candidate
    for n, why in ((2, "not list"), (3, "not NoneType"), (4, "behavior 'teleport'")):
        assert f"c.jsonl:{n}: " in r.output and why in r.output, r.output
