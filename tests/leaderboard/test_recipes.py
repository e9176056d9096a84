"""The recipe table: every non-null fact has a source, unsourced facts carry a range and a reason."""
from __future__ import annotations

from pathlib import Path

import pytest

from robustscale.leaderboard.recipes import FACT_KEYS, PHASE_FACTS, RecipeTableError, load_recipes, load_table

MODEL_INFO = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "robustbench-cifar10-linf"


def _facts(node, where=""):
    """Every fact mapping in the raw table (entries, recipes and phases), with where it sits."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in PHASE_FACTS + ("based_on", "members") and isinstance(value, dict):
                yield f"{where}.{key}", value
            elif key == "phases":
                for i, phase in enumerate(value):
                    yield from _facts(phase, f"{where}.phase{i + 1}")
            elif isinstance(value, dict):
                yield from _facts(value, f"{where}.{key}")


def test_every_non_null_fact_has_a_source_and_every_null_a_range_with_its_reason():
    table = load_table()
    facts = list(_facts(table))
    assert len(facts) > 300  # the table is the curated one, not an empty shell
    for where, fact in facts:
        assert set(fact) <= set(FACT_KEYS), where
        if fact.get("value") is not None:
            assert str(fact.get("source") or "").strip(), f"{where} has a value but no source"
        else:
            assert fact.get("low") is not None and fact.get("high") is not None, f"{where}: null without a range"
            assert fact.get("source") or str(fact.get("reason") or "").strip(), f"{where}: range without a reason"


def test_entries_parse_and_links_resolve():
    entries = load_recipes()
    for name, e in entries.items():
        assert e.excluded or e.phases or e.based_on, name
        if e.based_on is not None:
            assert e.based_on.value in entries
        for p in e.phases:
            for f in p.facts.values():
                assert f.sourced or f.reason, f"{name}: {f.name}"
    assert entries["Zhang2020Towards"].excluded  # excluded entries say why
    assert entries["Wu2020Adversarial"].own_sourced
    assert not entries["Standard"].own_sourced  # its epochs are a range


def test_table_covers_every_leaderboard_entry():
    if not MODEL_INFO.is_dir():
        pytest.skip(f"RobustBench model_info files not available at {MODEL_INFO}")
    names = {p.stem for p in MODEL_INFO.glob("*.json")}
    entries = load_recipes()
    assert names <= set(entries), sorted(names - set(entries))
    sourced = [n for n in names if entries[n].own_sourced]
    assert len(sourced) >= 52  # the curated count at the time of writing is 52 (51 once based_on links are followed)


@pytest.mark.parametrize("body, message", [
    ("entries:\n  X:\n    model: {value: wide_resnet16_1}\n", "has no source"),
    ("entries:\n  X:\n    model: {value: null, low: 1, high: 2}\n", "needs a reason"),
    ("entries:\n  X:\n    modle: {value: 1, source: s}\n", "unknown key"),
    ("entries:\n  X:\n    model: {value: wide_resnet16_1, source: s}\n    method: {value: adam, source: s}\n"
     "    batch_size: {value: 1, source: s}\n    train_steps: {value: 1, source: s}\n", "method 'adam'"),
    ("entries:\n  X:\n    based_on: {value: Y, source: s}\n", "not an entry"),
])
def test_a_broken_table_is_refused_with_the_rule_it_breaks(tmp_path, body, message):
    path = tmp_path / "recipes.yaml"
    path.write_text(body)
    with pytest.raises(RecipeTableError, match=message):
        load_recipes(path)

