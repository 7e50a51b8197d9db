"""Identifier anonymisation for the search evaluation (docs/design.md §5, AdvTest-style).

Why: with real identifiers a search model can match the query's words against the
function's name and variables; anonymising them shows what the *structure* (the code2vec
paths) adds when names carry no signal.

Convention (exact, so the numbers are reproducible):

* the function's own name becomes ``func`` (declaration and recursive references);
* every name **bound inside the function** becomes ``var1``, ``var2``, … in order of first
  appearance: parameters (plain, default, typed, ``*args``/``**kwargs``, lambda
  parameters), assignment and augmented-assignment targets, ``for``/comprehension targets,
  ``with … as`` and ``except … as`` names, walrus targets, nested ``def``/``class`` names,
  ``import … as`` aliases, ``global``/``nonlocal`` names;
* every occurrence of such a name as an identifier is replaced — except attribute names
  (``obj.name``) and keyword-argument names in calls (``f(name=…)``), which belong to other
  objects' interfaces;
* everything else (builtins, imported modules, attributes, literals, comments) is kept.

Only the text changes; line structure is preserved, so the result parses like the input.
"""

from __future__ import annotations

from tree_sitter import Node

from pathfusion.server.parsing import parse_bytes

FUNCTION_NAME = "func"
_FUNCTIONS = ("function_definition",)


def _walk(node: Node) -> list[Node]:
    """Every node under ``node`` (iteratively: deep code must not hit the recursion limit)."""
    out: list[Node] = []
    stack = [node]
    while stack:
        current = stack.pop()
        out.append(current)
        stack.extend(reversed(current.children))
    return out


def _target_identifiers(node: Node | None) -> list[Node]:
    """Identifiers bound by an assignment-like target (tuples, lists, starred, nested)."""
    if node is None:
        return []
    if node.type == "identifier":
        return [node]
    if node.type in ("pattern_list", "tuple_pattern", "list_pattern", "tuple", "list",
                     "list_splat_pattern", "parenthesized_expression", "as_pattern_target",
                     "expression_list"):
        found: list[Node] = []
        for child in node.named_children:
            found.extend(_target_identifiers(child))
        return found
    return []


def _bound_names(function: Node, source: bytes) -> list[Node]:
    """Identifier nodes that bind a name inside ``function`` (declaration order)."""
    bound: list[Node] = []
    for node in _walk(function):
        kind = node.type
        if kind in ("parameters", "lambda_parameters"):
            for param in node.named_children:
                if param.type == "identifier":
                    bound.append(param)
                else:
                    name = param.child_by_field_name("name")
                    if name is None:
                        name = next((c for c in param.named_children if c.type == "identifier"), None)
                    if name is not None and name.type == "identifier":
                        bound.append(name)
        elif kind in ("assignment", "augmented_assignment") or kind in ("for_statement", "for_in_clause"):
            bound.extend(_target_identifiers(node.child_by_field_name("left")))
        elif kind == "named_expression":
            bound.extend(_target_identifiers(node.child_by_field_name("name")))
        elif kind == "as_pattern":
            alias = node.child_by_field_name("alias")
            if alias is not None:
                bound.extend(_target_identifiers(alias))
        elif kind in ("function_definition", "class_definition") and node is not function:
            bound.extend(_target_identifiers(node.child_by_field_name("name")))
        elif kind == "aliased_import":
            bound.extend(_target_identifiers(node.child_by_field_name("alias")))
        elif kind in ("global_statement", "nonlocal_statement"):
            bound.extend(c for c in node.named_children if c.type == "identifier")
    return bound


def _is_reference(node: Node) -> bool:
    """False for attribute names and keyword-argument names (not the function's names)."""
    parent = node.parent
    if parent is None:
        return True
    if parent.type == "attribute" and parent.child_by_field_name("attribute") == node:
        return False
    return not (parent.type == "keyword_argument" and parent.child_by_field_name("name") == node)


def anonymise(code: str) -> str:
    """``code`` (one function's text) with its name and local names anonymised.

    Text without a function definition is returned unchanged.
    """
    source = code.encode("utf-8")
    root = parse_bytes(source).root_node
    function = next((n for n in _walk(root) if n.type in _FUNCTIONS), None)
    if function is None:
        return code
    names: dict[bytes, bytes] = {}
    own = function.child_by_field_name("name")
    if own is not None:
        names[source[own.start_byte:own.end_byte]] = FUNCTION_NAME.encode()
    for node in _bound_names(function, source):
        text = source[node.start_byte:node.end_byte]
        if text not in names and text not in (b"self", b"cls"):
            names[text] = f"var{len(names) + (0 if own is not None else 1)}".encode()
    edits: list[tuple[int, int, bytes]] = []
    for node in _walk(function):
        if node.type == "identifier" and _is_reference(node):
            replacement = names.get(source[node.start_byte:node.end_byte])
            if replacement is not None:
                edits.append((node.start_byte, node.end_byte, replacement))
    out = bytearray(source)
    for start, end, replacement in sorted(edits, reverse=True):
        out[start:end] = replacement
    return out.decode("utf-8", errors="replace")
