"""Path contexts: hand-checked goldens, limits, masking, and agreement with a brute force."""

from __future__ import annotations

import random
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pathfusion.server.parsing import Document
from pathfusion.server.paths import (
    EXTRACTOR_VERSION,
    METHOD_NAME,
    Context,
    all_contexts,
    context_space,
    extract_contexts,
    mask_source,
    name_label,
    parse_code2vec_line,
    render_name,
    split_subtokens,
    to_code2vec_line,
)


def contexts_of(code: str, index: int = 0) -> list[Context]:
    doc = Document(code)
    func = doc.functions()[index]
    return all_contexts(func.node, doc.source, func.name)


def test_golden_small_function() -> None:
    # Written out by hand from the tree:
    # function_definition[identifier f, parameters[identifier a],
    #                     block[return_statement[binary_operator(+)[identifier a, integer 1]]]]
    expected = {
        ("a", "identifier^binary_operator:add/integer", "1"),
        (METHOD_NAME, "identifier^function_definition/parameters/identifier", "a"),
        (METHOD_NAME, "identifier^function_definition/block/return_statement/binary_operator:add/identifier", "a"),
        (METHOD_NAME, "identifier^function_definition/block/return_statement/binary_operator:add/integer", "1"),
        ("a", "identifier^parameters^function_definition/block/return_statement/binary_operator:add/identifier", "a"),
        ("a", "identifier^parameters^function_definition/block/return_statement/binary_operator:add/integer", "1"),
    }
    got = contexts_of("def f(a):\n    return a + 1\n")
    assert Counter(tuple(c) for c in got) == Counter(expected)


def test_golden_attribute_call_and_string() -> None:
    # function_definition[identifier load, parameters[identifier self],
    #   block[expression_statement[call[attribute[identifier self, identifier read],
    #                                   argument_list[string "utf8"]]]]]
    got = {tuple(c) for c in contexts_of("def load(self):\n    self.read('utf8')\n")}
    assert ("self", "identifier^attribute/identifier", "read") in got
    assert ("read", "identifier^attribute^call/argument_list/string", "utf|8") in got
    assert ("self", "identifier^attribute^call/argument_list/string", "utf|8") in got
    assert (METHOD_NAME, "identifier^function_definition/parameters/identifier", "self") in got
    assert (
        METHOD_NAME,
        "identifier^function_definition/block/expression_statement/call/argument_list/string",
        "utf|8",
    ) in got
    # By hand: 1 pair under attribute, 2 under call, 1 + 3 + 3 under function_definition.
    assert len(got) == 10


def test_recursive_references_are_masked() -> None:
    code = (
        "class A:\n"
        "    def fact(self, n):\n"
        "        if n < 2:\n"
        "            return 1\n"
        "        return n * self.fact(n - 1) + fact(n) + cls.fact\n"
    )
    contexts = contexts_of(code)
    tokens = [c.start for c in contexts] + [c.end for c in contexts]
    assert "fact" not in tokens
    assert tokens.count(METHOD_NAME) > 0
    doc = Document(code)
    func = doc.functions()[0]
    masked = mask_source(func.source, func.name)
    assert "fact" not in masked and masked.count(METHOD_NAME) == 4


def test_width_limit() -> None:
    got = {(c.start, c.end) for c in contexts_of("def f():\n    g(a, b, c, d)\n")
           if c.path == "identifier^argument_list/identifier"}
    assert got == {("a", "b"), ("a", "c"), ("b", "c"), ("b", "d"), ("c", "d")}


def test_length_limit() -> None:
    # 9 nested parentheses-free calls: the leaves x and y below are far apart.
    code = "def f():\n    return a(b(c(d(e(x)))))\n"
    edges = [c.path.count("^") + c.path.count("/") for c in contexts_of(code)]
    assert min(edges) == 2 and max(edges) == 8
    longer = _brute_force(code, max_length=20)
    assert any(p.count("^") + p.count("/") > 8 for _, p, _ in longer)


def _brute_force(code: str, max_length: int = 8, max_width: int = 2) -> Counter[tuple[str, str, str]]:
    """Reference implementation: every leaf pair, explicit LCA, same conventions."""
    doc = Document(code)
    func = doc.functions()[0]
    space = context_space(func.node, doc.source, func.name)
    tree = space.tree
    labels = tree.labels
    children: dict[int, list[int]] = {}
    for index, parent in enumerate(tree.parents):
        children.setdefault(parent, []).append(index)
    leaves = [i for i in range(len(tree.labels)) if i not in children]

    def chain(node: int) -> list[int]:
        out = [node]
        while tree.parents[out[-1]] >= 0:
            out.append(tree.parents[out[-1]])
        return out

    result: Counter[tuple[str, str, str]] = Counter()
    for x, a in enumerate(leaves):
        up_a = chain(a)
        for b in leaves[x + 1 :]:
            up_b = chain(b)
            common = next(n for n in up_a if n in up_b)
            ia, ib = up_a.index(common), up_b.index(common)
            if ia + ib > max_length:
                continue
            siblings = children[common]
            if abs(siblings.index(up_b[ib - 1]) - siblings.index(up_a[ia - 1])) > max_width:
                continue
            path = "^".join(labels[n] for n in up_a[:ia]) + "^" + labels[common] + "/" + "/".join(
                labels[n] for n in reversed(up_b[:ib])
            )
            result[(space.token(a), path, space.token(b))] += 1
    return result


SNIPPETS = [
    "x = a + b * 2",
    "if x > 3:\n        return y",
    "for i in range(n):\n        total += i",
    "return self.items[key].value",
    "while not done:\n        done = step(x, y, z)",
    "try:\n        f(a)\n    except ValueError as e:\n        log(e)",
    "data = {'k': [1, 2, 3], 'v': (a, b)}",
    "return [x for x in xs if x]",
    "with open(p) as fh:\n        text = fh.read()",
    "assert a is not None, 'msg'",
    "y = -x if flag else ~x",
    "result = obj.method(arg, key=value).other",
]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from(SNIPPETS), min_size=1, max_size=6))
def test_fast_extractor_matches_brute_force(body: list[str]) -> None:
    code = "def fn(a, b=1):\n    " + "\n    ".join(body) + "\n"
    fast = Counter(tuple(c) for c in contexts_of(code))
    assert fast == _brute_force(code)


def test_sampling_is_deterministic_and_capped() -> None:
    code = "def big(a):\n" + "".join(f"    v{i} = a.f{i}(b{i}, c{i}) + {i}\n" for i in range(60))
    doc = Document(code)
    func = doc.functions()[0]
    first = extract_contexts(func.node, doc.source, func.name)
    again = extract_contexts(func.node, Document(code).source, func.name)
    assert len(first) == 200
    assert first == extract_contexts(doc.functions()[0].node, doc.source, func.name)
    assert [tuple(c) for c in first] == [tuple(c) for c in again]
    everything = set(all_contexts(func.node, doc.source, func.name))
    assert set(first) <= everything and len(everything) > 200
    trained = extract_contexts(func.node, doc.source, func.name, rng=random.Random(5))
    assert len(trained) == 200 and trained != first


def test_subtokens_and_labels() -> None:
    assert split_subtokens("getHTTPResponse2") == ("get", "http", "response", "2")
    assert split_subtokens("__init__") == ("init",)
    assert split_subtokens("parse_XMLFile") == ("parse", "xml", "file")
    assert name_label("_load_config") == "load|config"
    assert render_name("load|config", "_old") == "_load_config"
    assert render_name("load|config", "doThing") == "loadConfig"
    assert render_name("load|config", "x") == "load_config"


def test_literal_tokens() -> None:
    got = {c.end for c in contexts_of("def f():\n    return g(1, 12345, 'name', 'a long sentence', '', 0.5, True, None)\n")}
    assert {"1", "<NUM>", "name", "<STR>", "<EMPTY_STR>", "0.5", "true", "none"} <= got


def test_code2vec_text_format_roundtrip() -> None:
    contexts = contexts_of("def f(a):\n    return a + 1\n")
    line = to_code2vec_line("f", contexts)
    assert " " not in line.split(" ", 1)[0]
    label, parsed = parse_code2vec_line(line)
    assert label == "f" and parsed == contexts
    for item in line.split(" ")[1:]:
        assert item.count(",") == 2


def test_extractor_version_is_documented() -> None:
    import pathfusion.server.paths as paths

    assert EXTRACTOR_VERSION in (paths.__doc__ or "")


@pytest.mark.parametrize("code", ["def f(): pass\n", "async def f():\n    await g()\n"])
def test_tiny_functions(code: str) -> None:
    assert all(isinstance(c, Context) for c in contexts_of(code))
