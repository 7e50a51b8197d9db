"""What ``python -m pathfusion.model_export.similar_floor`` compares (docs/results.md, "What users
see, again")."""

from __future__ import annotations

from pathfusion.model_export.similar_floor import pairs_of, served_text


def row(project: str, name: str, qualname: str | None = None) -> dict[str, object]:
    label = "|".join(part for part in name.strip("_").split("_"))
    return {"project": project, "name": name, "qualname": qualname or name, "label": label,
            "masked_code": "def METHOD_NAME(x):\n    return METHOD_NAME(x - 1)"}


def test_pairs_cross_projects_and_alike_ones_share_a_name_of_two_words() -> None:
    rows = [row("a", "load_config"), row("b", "load_config"), row("c", "load_config"),
            row("a", "run"), row("b", "run"),                 # one word: not a name that says what it does
            row("a", "__init__"), row("b", "__init__"),       # dunders: every class has one
            row("a", "parse_args"), row("a", "parse_args"),   # one project: nothing to compare
            row("b", "read_file"), row("c", "read_file")]
    unrelated, alike = pairs_of(rows, 50)
    assert len(unrelated) == 50 and all(rows[a]["project"] != rows[b]["project"] for a, b in unrelated)
    named = sorted((rows[a]["name"], rows[a]["project"] != rows[b]["project"]) for a, b in alike)
    assert named == [("load_config", True), ("read_file", True)]
    assert all(rows[a]["name"] == rows[b]["name"] for a, b in alike)
    assert pairs_of(rows, 50) == (unrelated, alike)  # seeded


def test_the_text_is_what_the_index_embeds() -> None:
    assert served_text(row("a", "count", "Counter.count")) == (
        "class Counter:\n    def count(x):\n    return count(x - 1)")
