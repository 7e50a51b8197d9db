"""code2vec path contexts over tree-sitter-python trees.

This module is the model's eyes: training (``model_export``) and serving (``server``) both
call :func:`context_space` and sample from it (:func:`extract_contexts` does both), so a
model only ever sees features produced by this code.
Every convention below is part of the model's identity; changing any of them must change
:data:`EXTRACTOR_VERSION`, and the runtime refuses a model trained with another version.

Conventions (``EXTRACTOR_VERSION`` = ``pf-paths-3``):

* **Nodes.** Only *named* tree-sitter nodes take part; anonymous tokens (``(``, ``def``,
  ``,``…) and ``comment``/``line_continuation`` extras are ignored entirely.
* **Leaves.** A named node without named children, plus ``string`` and
  ``concatenated_string`` nodes, which are leaves as a whole (their interpolations are not
  descended into).
* **Leaf tokens.** identifiers → lowercase subtokens joined by ``|`` (``getHTTPResponse2`` →
  ``get|http|response|2``); the function's own name → ``METHOD_NAME`` wherever it occurs as
  an identifier (declaration, recursive calls, ``self.name``, ``cls.name``, and any other
  identifier spelled the same); integers in :data:`KEPT_NUMBERS` kept, other numbers
  ``<NUM>``; strings whose content looks like one identifier of at most 30 characters →
  its subtokens (at most 4), the empty string → ``<EMPTY_STR>``, a string equal to the
  function name → ``METHOD_NAME``, any other string → ``<STR>``; ``True``/``False``/
  ``None``/``...`` → ``true``/``false``/``none``/``ellipsis``; any other leaf → its node type.
* **Path.** From the start leaf up to the lowest common ancestor and down to the end leaf,
  as node types: ``up`` steps joined with ``^``, the turn at the ancestor, ``down`` steps
  joined with ``_``… concretely ``identifier^attribute^call_argument_list_identifier`` is
  written ``identifier^attribute^call/argument_list/identifier`` (``^`` = up, ``/`` =
  down).  Operator nodes carry their operator: ``binary_operator:add``,
  ``comparison_operator:lt``, ``boolean_operator:and``, ``unary_operator:neg``,
  ``augmented_assignment:add``.
* **Limits.** Length = number of edges ≤ 8; width = difference of the positions of the two
  branches among the ancestor's named (non-extra) children ≤ 2.  Each unordered leaf pair
  appears once, start leaf before end leaf in source order.
* **Root.** The function's definition node, decorators included.
* **Sampling.** At most ``max_contexts`` (200) contexts.  Without an ``rng`` the choice is a
  fixed-seed sample, so the same function always yields the same contexts (inference); the
  training loader passes its own reseeded ``rng``.

Why one module of ~500 lines: it is the single extractor shared by training and serving, and
its conventions (listed above) are the model's identity (``EXTRACTOR_VERSION``); keeping
them in one file keeps that identity in one place.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from itertools import accumulate, repeat
from typing import NamedTuple

from tree_sitter import Node

from .parsing import parse_bytes
from .positions import lf_view

EXTRACTOR_VERSION = "pf-paths-3"
MAX_LENGTH = 8
MAX_WIDTH = 2
MAX_CONTEXTS = 200
METHOD_NAME = "METHOD_NAME"
NUM_TOKEN = "<NUM>"
STR_TOKEN = "<STR>"
EMPTY_STR_TOKEN = "<EMPTY_STR>"

KEPT_NUMBERS = frozenset(
    {"0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "16", "32", "64", "100",
     "128", "255", "256", "1000", "1024", "0.0", "0.5", "1.0", "2.0"}
)

_SKIPPED_TYPES = frozenset({"comment", "line_continuation"})
_WHOLE_LEAF_TYPES = frozenset({"string", "concatenated_string"})
_FIXED_TOKENS = {"true": "true", "false": "false", "none": "none", "ellipsis": "ellipsis"}
_OPERATOR_NAMES = {
    "+": "add", "-": "sub", "*": "mul", "/": "div", "//": "floordiv", "%": "mod",
    "**": "pow", "@": "matmul", "<<": "lshift", ">>": "rshift", "&": "bitand",
    "|": "bitor", "^": "bitxor", "~": "invert", "<": "lt", ">": "gt", "==": "eq",
    "!=": "ne", "<=": "le", ">=": "ge", "<>": "ne", "in": "in", "not in": "notin",
    "is": "is", "is not": "isnot", "and": "and", "or": "or", "not": "not",
    "+=": "add", "-=": "sub", "*=": "mul", "/=": "div", "//=": "floordiv", "%=": "mod",
    "**=": "pow", "@=": "matmul", "<<=": "lshift", ">>=": "rshift", "&=": "bitand",
    "|=": "bitor", "^=": "bitxor",
}
_UNARY_NAMES = {"-": "neg", "+": "pos", "~": "invert"}
_OPERATOR_NODES = frozenset(
    {"binary_operator", "boolean_operator", "unary_operator", "augmented_assignment",
     "comparison_operator", "not_operator"}
)

_SUBTOKEN_RE = re.compile(r"\d+|[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|[^\W\d_]+")
_IDENTIFIER_RE = re.compile(r"[^\W\d]\w{0,29}")
_STRING_PREFIX_RE = re.compile(r"^[rRbBuUfFtT]*('''|\"\"\"|'|\")")


class Context(NamedTuple):
    """One path context: (start token, path, end token)."""

    start: str
    path: str
    end: str

    def to_text(self) -> str:
        return f"{self.start},{self.path},{self.end}"


# The caches below serve a long-running language server as well as the corpus pipeline, so
# they are bounded in entries *and* in the length of what they keep: a cache keyed by every
# identifier, query word or string literal ever seen grows with every edit, search and hover
# (measured: 200,000 identifiers cost ~120 MB, and a string cache keyed by whole docstrings
# keeps a copy of every edited version).  Identifiers repeat with a Zipf distribution, so the
# most recent 16k keep nearly every hit; long keys are rare and cheap to recompute.
CACHE_ENTRIES = 16_384
CACHED_LENGTH = 64
"""Keys longer than this (characters) are computed without the cache."""


def _split_subtokens(identifier: str) -> tuple[str, ...]:
    return tuple(part.lower() for part in _SUBTOKEN_RE.findall(identifier))


_split_subtokens_cached = lru_cache(maxsize=CACHE_ENTRIES)(_split_subtokens)


def split_subtokens(identifier: str) -> tuple[str, ...]:
    """Lowercase subtokens of an identifier: ``_`` , camelCase and digit boundaries."""
    if len(identifier) > CACHED_LENGTH:
        return _split_subtokens(identifier)
    return _split_subtokens_cached(identifier)


def _identifier_token(identifier: str) -> str:
    parts = split_subtokens(identifier)
    return "|".join(parts) if parts else identifier.lower()


_identifier_token_cached = lru_cache(maxsize=CACHE_ENTRIES)(_identifier_token)


def identifier_token(identifier: str) -> str:
    """The leaf token of an identifier: subtokens joined by ``|``."""
    if len(identifier) > CACHED_LENGTH:
        return _identifier_token(identifier)
    return _identifier_token_cached(identifier)


def name_label(name: str) -> str:
    """A function's target label (leading underscores dropped, see :func:`render_name`)."""
    return "|".join(split_subtokens(name))


def render_name(label: str, template: str = "") -> str:
    """Render a predicted ``a|b|c`` label in Python style, after ``template``'s style.

    The private prefix (leading underscores) of ``template`` is kept; a camelCase template
    gives a camelCase suggestion, anything else snake_case.
    """
    parts = [part for part in label.split("|") if part]
    prefix = template[: len(template) - len(template.lstrip("_"))]
    core = template.lstrip("_")
    if core and "_" not in core and any(c.isupper() for c in core[1:]) and core[0].islower():
        body = parts[0] + "".join(part.capitalize() for part in parts[1:]) if parts else ""
    else:
        body = "_".join(parts)
    return prefix + body


def _string_token(text: str, name: str) -> str:
    """The leaf token of a string literal (see :func:`_string_token_uncached`); only short
    literals — the identifier-like ones that get a token of their own — are cached."""
    if len(text) > CACHED_LENGTH:
        return _string_token_uncached(text, name)
    return _string_token_cached(text, name)


def _string_token_uncached(text: str, name: str) -> str:
    """``<STR>``, the empty-string token, METHOD_NAME, or the subtokens of a string whose
    content is one identifier-like word."""
    match = _STRING_PREFIX_RE.match(text)
    if match is None:
        return STR_TOKEN
    quote = match.group(1)
    content = text[match.end() : len(text) - len(quote)] if text.endswith(quote) else ""
    if not content:
        return EMPTY_STR_TOKEN if text.endswith(quote) and len(text) >= match.end() + len(quote) else STR_TOKEN
    if content == name:
        return METHOD_NAME
    if _IDENTIFIER_RE.fullmatch(content):
        parts = split_subtokens(content)[:4]
        if parts:
            return "|".join(parts)
    return STR_TOKEN


_string_token_cached = lru_cache(maxsize=CACHE_ENTRIES)(_string_token_uncached)


def _number_token(text: str) -> str:
    cleaned = text.replace("_", "").lower()
    return cleaned if cleaned in KEPT_NUMBERS else NUM_TOKEN


def _operator_label(node: Node, node_type: str) -> str:
    for child in node.children:
        if not child.is_named:
            op = child.type
            if node_type == "unary_operator":
                return node_type + ":" + _UNARY_NAMES.get(op, "op")
            if node_type == "not_operator":
                return node_type
            return node_type + ":" + _OPERATOR_NAMES.get(op, "op")
    return node_type


_EMPTY: list[tuple[int, str, str]] = []


# A frontier entry: (leaf node index, path text up from the leaf, path text down to it).
_Entry = tuple[int, str, str]
_Frontier = list[list[_Entry]]


@dataclass(slots=True)
class _Tree:
    """The named nodes under a function root, flattened in pre-order."""

    nodes: list[Node]
    labels: list[str]
    """Path label of every node: its type, with the operator for operator nodes."""
    parents: list[int]


@dataclass(slots=True)
class ContextSpace:
    """Every path context of a function, counted but not yet written out.

    A *block* is the set of pairs between two children (at most ``max_width`` apart) of one
    ancestor node; it is stored as the two children's frontiers, so that counting all
    contexts is cheap and only the sampled ones are joined into strings.
    """

    tree: _Tree
    source: bytes
    name: str
    blocks: list[tuple[int, _Frontier, _Frontier, int]]
    total: int
    budget: int
    """``max_length - 2``: the largest sum of the two branch depths below the ancestor."""

    def token(self, index: int) -> str:
        """The leaf token of node ``index`` (conventions in the module docstring)."""
        node = self.tree.nodes[index]
        node_type = self.tree.labels[index]
        source = self.source
        if node_type == "identifier":
            text = source[node.start_byte : node.end_byte].decode("utf-8", "replace")
            return METHOD_NAME if text == self.name else identifier_token(text)
        if node_type == "string":
            text = source[node.start_byte : node.end_byte].decode("utf-8", "replace")
            return _string_token(text, self.name)
        if node_type == "concatenated_string":
            return STR_TOKEN
        if node_type in ("integer", "float"):
            return _number_token(source[node.start_byte : node.end_byte].decode("ascii", "replace"))
        return _FIXED_TOKENS.get(node_type, node_type)

    def contexts(self, indices: Sequence[int] | None = None) -> list[Context]:
        """The contexts at sorted ``indices`` (all of them when ``None``), as strings.

        This loop is the extractor's hot path: the halves of each path were built while
        counting, so a context costs one concatenation and two cached token look-ups.
        """
        labels = self.tree.labels
        tokens: dict[int, str] = {}
        token = self.token
        budget = self.budget
        new = tuple.__new__
        out: list[Context] = []
        append = out.append
        wanted = self.total if indices is None else len(indices)
        if wanted and indices is not None and (indices[-1] >= self.total or indices[0] < 0):
            raise IndexError("context index out of range")
        cursor = 0
        base = 0
        for ancestor, left, right, count in self.blocks:
            if cursor >= wanted:
                break
            if indices is not None and indices[cursor] >= base + count:
                base += count
                continue
            prefix = list(accumulate(map(len, right[: budget + 1])))
            last = len(prefix) - 1
            flat_right = [entry for bucket in right[: budget + 1] for entry in bucket]
            right_tokens = []
            for leaf, _, _ in flat_right:
                tok = tokens.get(leaf)
                if tok is None:
                    tok = tokens[leaf] = token(leaf)
                right_tokens.append(tok)
            turn = "^" + labels[ancestor] + "/"
            group_start = base
            for depth, bucket in enumerate(left):
                if not bucket or depth > budget:
                    continue
                reach = prefix[min(budget - depth, last)]
                group_end = group_start + len(bucket) * reach
                if indices is not None and (cursor >= wanted or indices[cursor] >= group_end):
                    group_start = group_end
                    continue
                for position, (leaf, up, _) in enumerate(bucket):
                    pair_start = group_start + position * reach
                    if indices is not None and (cursor >= wanted or indices[cursor] >= pair_start + reach):
                        continue
                    head = up + turn
                    first = tokens.get(leaf)
                    if first is None:
                        first = tokens[leaf] = token(leaf)
                    if indices is None:
                        for (_, _, down), second in zip(flat_right[:reach], right_tokens, strict=False):
                            append(new(Context, (first, head + down, second)))
                    else:
                        while cursor < wanted and indices[cursor] < pair_start + reach:
                            offset = indices[cursor] - pair_start
                            append(new(Context, (first, head + flat_right[offset][2], right_tokens[offset])))
                            cursor += 1
                group_start = group_end
            base += count
        return out

    def sample(self, k: int = MAX_CONTEXTS, rng: random.Random | None = None) -> list[Context]:
        """At most ``k`` contexts (all of them when there are fewer), in enumeration order."""
        if self.total <= k:
            return self.contexts()
        return self.contexts(sample_indices(self.total, k, rng))


def _flatten(root: Node) -> _Tree:
    """Pre-order list of the named, non-extra nodes under ``root`` (iterative)."""
    nodes: list[Node] = []
    labels: list[str] = []
    parents: list[int] = []
    stack: list[tuple[Node, int]] = [(root, -1)]
    pop = stack.pop
    extend = stack.extend
    skipped = _SKIPPED_TYPES
    whole = _WHOLE_LEAF_TYPES
    operator_types = _OPERATOR_NODES
    while stack:
        node, parent = pop()
        node_type = node.type
        if node_type in skipped:
            continue
        index = len(labels)
        nodes.append(node)
        labels.append(_operator_label(node, node_type) if node_type in operator_types else node_type)
        parents.append(parent)
        if node_type not in whole:
            children = node.named_children
            if children:
                extend(zip(reversed(children), repeat(index)))
    return _Tree(nodes, labels, parents)


def context_space(
    root: Node,
    source: bytes,
    name: str,
    *,
    max_length: int = MAX_LENGTH,
    max_width: int = MAX_WIDTH,
) -> ContextSpace:
    """Count every path context under ``root`` within the limits, without writing them.

    One bottom-up pass: each subtree keeps its *frontier*, its leaves bucketed by depth
    below it (only depths that can still form a path of ``max_length`` edges); at each
    node the frontiers of children at most ``max_width`` apart form a block whose size is
    a sum of bucket products.  Only sampled contexts are ever turned into strings, which
    is what keeps extraction fast on long functions (see ``benchmarks/extract.py``).
    """
    tree = _flatten(root)
    parents = tree.parents
    labels = tree.labels
    count = len(parents)
    budget = max_length - 2
    keep = budget + 1  # frontier buckets 0..budget can still pair with a sibling leaf
    pending: list[list[_Frontier] | None] = [None] * count
    blocks: list[tuple[int, _Frontier, _Frontier, int]] = []
    total = 0
    for index in range(count - 1, -1, -1):
        kids = pending[index]
        label = labels[index]
        if kids is None:
            frontier: _Frontier = [[(index, label, label)]]
        else:
            pending[index] = None
            kids.reverse()
            width = len(kids)
            up_step = "^" + label
            down_step = label + "/"
            if width == 1:
                frontier = [_EMPTY]
                for bucket in kids[0][: keep - 1]:
                    frontier.append([(leaf, up + up_step, down_step + down) for leaf, up, down in bucket])
            else:
                for i in range(width - 1):
                    left = kids[i]
                    for j in range(i + 1, min(i + max_width + 1, width)):
                        right = kids[j]
                        prefix = list(accumulate(map(len, right[:keep])))
                        last = len(prefix) - 1
                        size = 0
                        for depth, bucket in enumerate(left):
                            if bucket:
                                size += len(bucket) * prefix[min(budget - depth, last)]
                        if size:
                            blocks.append((index, left, right, size))
                            total += size
                depth_count = min(max(len(kid) for kid in kids), keep - 1)
                frontier = [_EMPTY]
                for depth in range(depth_count):
                    frontier.append([
                        (leaf, up + up_step, down_step + down)
                        for kid in kids
                        if depth < len(kid)
                        for leaf, up, down in kid[depth]
                    ])
        parent = parents[index]
        if parent >= 0:
            slot = pending[parent]
            if slot is None:
                pending[parent] = [frontier]
            else:
                slot.append(frontier)
    return ContextSpace(tree, source, name, blocks, total, budget)


def sample_indices(total: int, k: int, rng: random.Random | None = None) -> list[int]:
    """Indices of the contexts to keep, in their original order.

    Without ``rng`` the sample is a pure function of ``total`` (deterministic inference).
    """
    if total <= k:
        return list(range(total))
    chooser = rng if rng is not None else random.Random(total)
    return sorted(chooser.sample(range(total), k))


def extract_contexts(
    root: Node,
    source: bytes,
    name: str,
    *,
    max_contexts: int = MAX_CONTEXTS,
    rng: random.Random | None = None,
    max_length: int = MAX_LENGTH,
    max_width: int = MAX_WIDTH,
) -> list[Context]:
    """At most ``max_contexts`` path contexts of the function rooted at ``root``."""
    space = context_space(root, source, name, max_length=max_length, max_width=max_width)
    return space.sample(max_contexts, rng)


def all_contexts(root: Node, source: bytes, name: str) -> list[Context]:
    """Every context, unsampled, in enumeration order (for tests and tools)."""
    return context_space(root, source, name).contexts()


def to_code2vec_line(label: str, contexts: Iterable[Context]) -> str:
    """One line of the code2vec/astminer text format: ``label tok,path,tok …``."""
    return " ".join([label, *(context.to_text() for context in contexts)])


def parse_code2vec_line(line: str) -> tuple[str, list[Context]]:
    """Inverse of :func:`to_code2vec_line` (for tools that read our corpus back)."""
    label, *rest = line.rstrip("\n").split(" ")
    contexts: list[Context] = []
    for item in rest:
        start, path, end = item.split(",")
        contexts.append(Context(start, path, end))
    return label, contexts


def mask_source(source: str, name: str) -> str:
    """The function's text as a naming model may see it: every occurrence of ``name`` as a
    word (identifiers, attributes, comments, docstrings) replaced by ``METHOD_NAME``."""
    if not name:
        return source
    return re.sub(rf"(?<![\w]){re.escape(name)}(?![\w])", METHOD_NAME, source)


def contexts_of_text(code: str, max_contexts: int = MAX_CONTEXTS) -> list[str]:
    """Contexts (as text) of the first function defined in ``code``, parsed on its own.

    Why a standalone parse: a function's search vector must depend only on its own text (the
    index caches vectors by the text's hash), and evaluation transforms code (anonymised
    identifiers) before extracting.  Text without a function gives no contexts.  Parsed in
    its LF view (:func:`~pathfusion.server.positions.lf_view`), as the server parses
    documents: tree-sitter's grammar ends lines at ``\n`` only, so a text whose lines end
    in lone ``\r`` would otherwise parse as one broken line.
    """
    source = lf_view(code.encode("utf-8"))
    stack = [parse_bytes(source).root_node]
    while stack:
        node = stack.pop()
        if node.type == "function_definition":
            name_node = node.child_by_field_name("name")
            name = source[name_node.start_byte:name_node.end_byte].decode("utf-8", "replace") if name_node else ""
            return [c.to_text() for c in context_space(node, source, name).sample(max_contexts)]
        stack.extend(reversed(node.children))
    return []
