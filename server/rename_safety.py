"""Which new names a rename may give a function without breaking the code.

Why: the naming model knows nothing of the module around a function.  For a function that
calls ``json.load`` under ``import json`` its top suggestion was ``json``, and "Rename `f` →
`json`" shadowed the module: every ``json.*`` call of the file then raised
``AttributeError``.  A name is only offered (hover and code actions) when the rename can
neither shadow a binding nor be shadowed by one.  For a function defined in scope ``P``
(the module, a function, or a class body for a method) renamed from ``old`` to ``new``,
``new`` clashes when it is:

* not an identifier, or a Python keyword (soft keywords such as ``match`` or ``type`` are
  fine: they stay usable as names);
* any name of the function's own scopes — a parameter, a local, a name it uses (``json`` in
  ``json.load``, the builtin ``open``): the function's recursive calls would resolve to it,
  or its uses would resolve to the function;
* for a module-level or nested function, any name of ``P`` (an import, a module global, a
  builtin or global used at module level, the enclosing function's parameters and locals),
  a name that any scope nested in ``P`` uses without binding it (``print`` called in another
  function would become this function), or a local of a nested scope that also uses
  ``old`` (its call would resolve to that local);
* for a method, any name of its class body (methods, class attributes, names used there),
  any attribute set or read through ``self``, ``cls`` or the class name, the same for the
  classes of the file that it derives from or that derive from it, and any member of a base
  that another module defines (``start`` for a ``threading.Thread`` subclass: renamed so, it
  would override ``Thread.start``; read from source, :mod:`pathfusion.server.base_classes`)
  or of a subclass in the project's other files (:mod:`pathfusion.server.subclasses`);
* anything, for a method whose own name the class hierarchy fixes (it overrides a base's
  method or is overridden: :mod:`pathfusion.server.overrides`).

The scopes come from the compiler itself (:mod:`symtable`: the exact rules of Python for
class bodies, comprehensions, ``global`` and ``nonlocal``), the class attributes from
:mod:`ast`.  A document that does not compile (being edited) falls back to the safe side:
every word of the document clashes.  The analysis of a text is cached
(:data:`CACHE_SIZE` texts), so repeated hovers on one version pay for it once.

Why one module of ~420 lines: what the module defines, what each scope binds and what a
new name would shadow are one analysis of the same tree; its parts are not used apart.

A rename also edits the other files that import the function; what it does there is only
known once jedi has computed it, so :func:`identifiers` lets the code action check those
files before it answers (a name already used there is refused with a reason).
"""

from __future__ import annotations

import ast
import keyword
import re
import symtable
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from .base_classes import Origin, class_members, imports_of, origin_of, through_branches
from .overrides import (
    base_names,
    classes_by_name,
    external_bases,
    hierarchy_member,
    inherited_members,
    method_class,
)
from .subclasses import NotRead, Subclass, overriding_subclass, project_subclasses, scan_project

if TYPE_CHECKING:
    from .code2vec import Suggestion
    from .parsing import FunctionInfo

CACHE_SIZE = 4
"""Texts whose analysis is kept (the documents being hovered)."""
EXTRA_CANDIDATES = 10
"""How many more names than shown are asked of the model, so that names dropped as clashes
leave room for the next ones."""
_SCOPE_KINDS = frozenset({"module", "class", "function"})
_WORD_RE = re.compile(r"\w+")
_PARSE_ERRORS = (SyntaxError, ValueError, RecursionError, MemoryError, OverflowError)
"""What compiling a document may raise: invalid code, null bytes or lone surrogates (ValueError),
nesting too deep for the parser."""


def candidate_count(top_k: int) -> int:
    """How many names to ask the model for when ``top_k`` are to be shown."""
    return max(2 * top_k, top_k + EXTRA_CANDIDATES)


@dataclass
class _Table:
    """One scope of the module (flattened :class:`symtable.SymbolTable`)."""

    table: symtable.SymbolTable
    kind: str
    """``module``, ``class``, ``function``, or another (type parameters, annotations)."""
    parent: _Table | None
    depth: int

    @property
    def name(self) -> str:
        return self.table.get_name()

    def symbol(self, name: str) -> symtable.Symbol | None:
        try:
            return self.table.lookup(name)
        except KeyError:
            return None

    def scope(self) -> _Table | None:
        """The nearest enclosing module, class or function scope (type parameter and
        annotation scopes are not where a ``def`` binds its name)."""
        up = self.parent
        while up is not None and up.kind not in _SCOPE_KINDS:
            up = up.parent
        return up

    def within(self, other: _Table) -> bool:
        """Whether this scope is ``other`` or nested in it."""
        node: _Table | None = self
        while node is not None and node.depth >= other.depth:
            if node is other:
                return True
            node = node.parent
        return False


def _kind(table: symtable.SymbolTable) -> str:
    kind = table.get_type()
    return str(getattr(kind, "value", kind))  # an enum from Python 3.13 on


class ModuleNames:
    """What the clash rules need of one text: its scopes, lazily its AST and words."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.tables: list[_Table] = []
        self.where: dict[str, list[_Table]] = {}
        """name → the scopes that have a symbol of that name."""
        self._ast: ast.Module | None = None
        self._words: frozenset[str] | None = None
        self._class_names: dict[int, tuple[frozenset[str], dict[str, str]]] = {}
        self._classes: dict[str, list[ast.ClassDef]] | None = None
        self._imports: dict[str | None, dict[str, tuple[str, str]]] = {}
        try:
            top = symtable.symtable(text, "<document>", "exec")
        except _PARSE_ERRORS:
            self.compiled = False
            return
        self.compiled = True
        stack: list[tuple[symtable.SymbolTable, _Table | None]] = [(top, None)]
        while stack:
            table, parent = stack.pop()
            entry = _Table(table, _kind(table), parent, parent.depth + 1 if parent is not None else 0)
            self.tables.append(entry)
            for name in table.get_identifiers():
                self.where.setdefault(name, []).append(entry)
            stack.extend((child, entry) for child in reversed(table.get_children()))

    def words(self) -> frozenset[str]:
        """Every word of the text: the safe side when the text does not compile."""
        if self._words is None:
            self._words = frozenset(_WORD_RE.findall(self.text))
        return self._words

    def tree(self) -> ast.Module | None:
        if self._ast is None and self.compiled:
            try:
                self._ast = ast.parse(self.text)
            except _PARSE_ERRORS:
                return None
        return self._ast

    def classes(self) -> dict[str, list[ast.ClassDef]]:
        """The module's classes by simple name (none when it does not parse), found once."""
        if self._classes is None:
            tree = self.tree()
            self._classes = classes_by_name(tree) if tree is not None else {}
        return self._classes

    def imports(self, package: str | None) -> dict[str, tuple[str, str]]:
        """What the module's imports bind (:func:`~pathfusion.server.base_classes.imports_of`),
        its relative imports read from ``package`` (the text is the same wherever it is)."""
        if package not in self._imports:
            tree = self.tree()
            self._imports[package] = imports_of(tree, package) if tree is not None else {}
        return self._imports[package]

    def read_bases(self, origin: Origin) -> None:
        """Read the classes the module's classes derive from in other modules (their files
        parsed once, kept while unchanged: tkinter's 170 KB take ≈ 50 ms) and the class
        headers of the project's files, so that the hover's rules find them read."""
        classes, imports = self.classes(), self.imports(origin.package)
        for nodes in classes.values():
            for node in nodes:
                for found in external_bases(node, classes, imports, self._binds):
                    class_members(*found, origin.path)
        tree = self.tree()
        if origin.module is not None and tree is not None:  # their subclasses in the project's other files
            scan_project(origin, [(origin.module, s.name) for s in through_branches(tree.body) if isinstance(s, ast.ClassDef)])

    def class_names(self, scope: _Table) -> tuple[frozenset[str], dict[str, str]]:
        """For the class ``scope``: the attributes its body reaches through ``self``,
        ``cls`` or its name, and ``{name: class}`` for the members and such attributes of
        the related classes of the file (:func:`_related_classes`).  Computed once per
        class: a hover checks many names."""
        key = scope.table.get_id()
        if key not in self._class_names:
            self._class_names[key] = self._compute_class_names(scope)
        return self._class_names[key]

    def _compute_class_names(self, scope: _Table) -> tuple[frozenset[str], dict[str, str]]:
        mine = self._class_node(scope)
        if mine is None:
            return frozenset(), {}
        related: dict[str, str] = {}
        for other in _related_classes(mine, self.classes()):
            table = next((t for t in self.tables if t.kind == "class" and t.name == other.name
                          and t.table.get_lineno() == other.lineno), None)
            names = set(_attributes(other))
            if table is not None:
                names.update(table.table.get_identifiers())
            for name in names:
                related.setdefault(name, other.name)
        return frozenset(_attributes(mine)), related

    def _class_node(self, scope: _Table) -> ast.ClassDef | None:
        """The ``class`` statement of the class scope ``scope`` (None when the text does not parse)."""
        return next((node for node in self.classes().get(scope.name, ()) if node.lineno == scope.table.get_lineno()),
                    None)

    def fixed_by(self, name: str, def_line: int, origin: Origin, budget_s: float | None = None) -> str | NotRead | None:
        """``Class.name`` of the related class's member that keeps the method ``name``
        (``def`` on 1-based ``def_line``) from being renamed (:mod:`pathfusion.server.overrides`),
        or None; :data:`~pathfusion.server.subclasses.NOT_READ` when the subclasses in the
        project's other files were not read within ``budget_s``.  Not kept: another file it
        reads may change (what is read is cached in :mod:`pathfusion.server.base_classes` and
        :mod:`pathfusion.server.subclasses` while the files are unchanged)."""
        own = method_class(self.classes(), name, def_line)
        if own is None:
            return None  # not a method
        found = hierarchy_member(own, self.classes(), self.imports(origin.package), name, self._binds, origin.path)
        tree = self.tree()
        if found is not None or tree is None or origin.module is None:
            return found
        if not any(node is own for node in through_branches(tree.body)):
            return None  # a nested class: no other module names it
        return overriding_subclass(origin, origin.module, own.name, name, budget_s)

    def inherited(self, scope: _Table, origin: Origin) -> Iterator[tuple[str, frozenset[str]]]:
        """(``module.Class``, members) of the bases in other modules of the class ``scope``
        and of its ancestors in the file."""
        node = self._class_node(scope)
        if node is not None:
            yield from inherited_members(node, self.classes(), self.imports(origin.package), self._binds, origin.path)

    def subclasses(self, scope: _Table, origin: Origin) -> list[Subclass]:
        """The subclasses in the project's files of the top-level class ``scope`` (what was
        read: :meth:`fixed_by` has waited for them first)."""
        tree = self.tree()
        if tree is None or origin.module is None or scope.depth != 1:
            return []
        found = project_subclasses(origin, origin.module, scope.name, 0.0)
        return [] if isinstance(found, NotRead) else found

    def _binds(self, name: str) -> bool:
        """Whether the module binds ``name`` itself (an import, an assignment, a def or class)."""
        symbol = self.tables[0].symbol(name) if self.tables else None
        return symbol is not None and (symbol.is_imported() or symbol.is_assigned() or symbol.is_namespace())

    def function_tables(self, qualname: str, line: int) -> list[_Table]:
        """The function scopes named by ``qualname`` (``A.m.<locals>.f``); when several
        definitions share it, the one whose ``def`` is on 1-based ``line``, else all."""
        parts = [part for part in qualname.split(".") if part != "<locals>"]
        if not parts or not self.tables:
            return []
        level = [self.tables[0]]
        for depth, part in enumerate(parts):
            last = depth == len(parts) - 1
            level = [child for table in level for child in self._scope_children(table)
                     if child.name == part and (child.kind == "function" or (not last and child.kind == "class"))]
        on_line = [table for table in level if table.table.get_lineno() == line]
        return on_line or level

    def _scope_children(self, parent: _Table) -> Iterator[_Table]:
        """The function and class scopes directly in ``parent`` (through type parameter
        scopes)."""
        for table in self.tables:
            if table.kind in ("function", "class") and table.scope() is parent:
                yield table


_CACHE: OrderedDict[str, ModuleNames] = OrderedDict()
_CACHE_LOCK = threading.Lock()
_STARTED: dict[str, Future[ModuleNames]] = {}
"""Analyses started by :func:`start_module_names` and not finished yet."""
_ANALYST: list[ThreadPoolExecutor] = []


def module_names(text: str, origin: Origin | None = None) -> ModuleNames:
    """The analysis of ``text``, cached (the same text object hashes once); one already
    started on the analysis thread is waited for, not done twice."""
    with _CACHE_LOCK:
        found = _CACHE.get(text)
        if found is not None:
            _CACHE.move_to_end(text)
            return found
        started = _STARTED.get(text)
    if started is not None:
        return started.result()
    return _analyse(text, origin or origin_of(None))


def start_module_names(text: str, origin: Origin | None = None) -> None:
    """Begin the analysis of ``text`` on a thread of its own and return at once.  Why: a
    hover asks the naming model first and the rename rules after; the model's onnxruntime
    calls release the GIL, so on the other core the analysis (≈ 40 ms for a 2,600-line
    module: symtable, AST) is done by the time the names are — for the first hover of a
    file and the first after each edit, which cannot find it cached."""
    with _CACHE_LOCK:
        if text in _CACHE or text in _STARTED:
            return
        if not _ANALYST:
            _ANALYST.append(ThreadPoolExecutor(max_workers=1, thread_name_prefix="pathfusion-names"))
        _STARTED[text] = _ANALYST[0].submit(_analyse, text, origin or origin_of(None))


def _analyse(text: str, origin: Origin) -> ModuleNames:
    try:
        found = ModuleNames(text)
        found.read_bases(origin)  # the AST, its classes and their bases, that the rules read, while on this thread
        with _CACHE_LOCK:
            _CACHE[text] = found
            while len(_CACHE) > CACHE_SIZE:
                _CACHE.popitem(last=False)
        return found
    finally:
        with _CACHE_LOCK:
            _STARTED.pop(text, None)


# -- the rules -------------------------------------------------------------------------------
def name_problem(name: str) -> str | None:
    """Why ``name`` can never be a function's name, or None."""
    if not name.isidentifier():
        return "not an identifier"
    if keyword.iskeyword(name):
        return "a Python keyword"
    return None


def clashes(text: str, func: FunctionInfo, names: Iterable[str], origin: Origin | None = None,
            budget_s: float | None = None) -> dict[str, str]:
    """``{name: reason}`` for each of ``names`` that renaming ``func`` (a function of
    ``text``, a module at ``origin``: :func:`~pathfusion.server.base_classes.origin_of` its
    file; None: a document without one) to would clash with a binding (see the module
    docstring); the other names are safe.  ``func``'s own name is never reported.
    ``budget_s``: how long the subclasses in the project's other files may be waited for
    (a hover; None: a rename about to be applied waits as long as it takes); a method whose
    subclasses were not read in time is offered nothing, for now."""
    where = origin or origin_of(None)
    return _clashes(text, func, names, where, lambda: name_kept(text, func, where, budget_s))


def _clashes(text: str, func: FunctionInfo, names: Iterable[str], origin: Origin,
             kept_by: Callable[[], str | None]) -> dict[str, str]:
    """:func:`clashes`, with :func:`name_kept` given (``kept_by``, asked only when a name is
    left to check): :func:`safe_suggestion` needs it too and computes it once."""
    wanted = [name for name in dict.fromkeys(names) if name != func.name]
    found: dict[str, str] = {}
    for name in wanted:
        problem = name_problem(name)
        if problem is not None:
            found[name] = problem
    wanted = [name for name in wanted if name not in found]
    if not wanted:
        return found
    module = module_names(text, origin)
    kept = kept_by()
    if kept is not None:
        found.update({name: kept for name in wanted})
        return found
    tables = module.function_tables(func.qualname, func.name_span.start.line + 1) if module.compiled else []
    if not tables:  # does not compile (or an unexpected shape): every word of the text clashes
        words = module.words()
        found.update({name: "already used in this file" for name in wanted if name in words})
        return found
    for table in tables:
        for name in wanted:
            if name not in found:
                reason = _clash(module, table, func.name, name, origin)
                if reason is not None:
                    found[name] = reason
    return found


def name_kept(text: str, func: FunctionInfo, origin: Origin, budget_s: float | None = None) -> str | None:
    """Why the method ``func`` of ``text`` keeps its name whatever the new one — its class
    hierarchy fixes it (:mod:`pathfusion.server.overrides`), or its subclasses were not read
    within ``budget_s`` — or None."""
    module = module_names(text, origin)
    fixed = module.fixed_by(func.name, func.name_span.start.line + 1, origin, budget_s) if module.compiled else None
    if isinstance(fixed, NotRead):
        return "its subclasses in the project's other files are still being read"
    if fixed is not None:
        return f"`{fixed}` has the same name in the class hierarchy: renamed, one would no longer override the other"
    return None


def _clash(module: ModuleNames, own: _Table, old: str, new: str, origin: Origin) -> str | None:
    """Why renaming the function of scope ``own`` from ``old`` to ``new`` clashes, or None."""
    for table in module.where.get(new, ()):
        if table.within(own):
            return _describe(table, new, _where(table))
    scope = own.scope()
    if scope is None:
        return None
    if scope.kind == "class":
        return _class_clash(module, scope, new, origin)
    return _scope_clash(module, scope, own, old, new)


def _describe(table: _Table, name: str, where: str) -> str:
    symbol = table.symbol(name)
    if symbol is None:
        return f"used in {where}"
    if symbol.is_parameter():
        return f"a parameter of {where}"
    if symbol.is_imported():
        return f"imported in {where}"
    if symbol.is_local() and (symbol.is_assigned() or symbol.is_namespace()):
        return f"already defined in {where}"
    return f"used in {where}"


_ANONYMOUS = {"lambda": "a lambda", "listcomp": "a comprehension", "setcomp": "a comprehension",
              "dictcomp": "a comprehension", "genexpr": "a generator expression"}


def _where(table: _Table) -> str:
    if table.kind == "module":
        return "the module"
    if table.kind == "class":
        return f"class `{table.name}`"
    name = table.name.strip("<>")
    if table.kind == "function" and name in _ANONYMOUS:  # symtable's names for them
        return _ANONYMOUS[name]
    return f"`{table.name}`"


def _scope_clash(module: ModuleNames, scope: _Table, own: _Table, old: str, new: str) -> str | None:
    """A function defined in a module or function ``scope``: its name joins ``scope``'s."""
    if scope.symbol(new) is not None:
        return _describe(scope, new, _where(scope))
    for table in module.where.get(new, ()):
        if table is scope or not table.within(scope) or table.within(own):
            continue
        symbol = table.symbol(new)
        assert symbol is not None
        if symbol.is_local():
            # a local of a nested scope: a clash only where that scope also uses ``old``
            # (its call would resolve to the local)
            if any(user.within(table) for user in module.where.get(old, ())):
                return f"already defined in {_where(table)}, which uses `{old}`"
            continue
        # used there without a binding of its own: it resolves outwards, to the renamed
        # function, unless a function in between binds it
        up = table.parent
        resolved = False
        while up is not None and up is not scope:
            bound = up.symbol(new)
            if up.kind == "function" and bound is not None and bound.is_local():
                resolved = True
                break
            up = up.parent
        if not resolved:
            return f"used in {_where(table)}"
    return None


def _class_clash(module: ModuleNames, scope: _Table, new: str, origin: Origin) -> str | None:
    """A method: its name joins the class's members (and those of related classes)."""
    if scope.symbol(new) is not None:
        return _describe(scope, new, _where(scope))
    attributes, related = module.class_names(scope)
    if new in attributes:
        return f"an attribute of class `{scope.name}`"
    if new in related:
        return f"a member of the related class `{related[new]}`"
    owner = next((owner for owner, members in module.inherited(scope, origin) if new in members), None)
    if owner is not None:
        return f"a member of the base class `{owner}`: renamed so, it would override it"
    sub = next((sub for sub, members in module.subclasses(scope, origin) if new in members), None)
    if sub is not None:
        return f"a member of the subclass `{sub[0]}.{sub[1]}`: renamed so, it would be overridden"
    return None


def _attributes(node: ast.ClassDef) -> set[str]:
    """Attributes set or read through ``self``, ``cls`` or the class's name in its body."""
    owners = {"self", "cls", node.name}
    return {sub.attr for sub in ast.walk(node)
            if isinstance(sub, ast.Attribute) and isinstance(sub.value, ast.Name) and sub.value.id in owners}


def _related_classes(start: ast.ClassDef, classes: dict[str, list[ast.ClassDef]]) -> list[ast.ClassDef]:
    """The classes of the file that ``start`` derives from or that derive from it (by
    simple name, transitively): a method renamed onto one of their members overrides or
    is overridden by it."""
    every = [node for nodes in classes.values() for node in nodes]
    seen = {id(start)}
    found: list[ast.ClassDef] = []
    todo = [start]
    while todo:
        node = todo.pop()
        neighbours = [c for name in base_names(node) for c in classes.get(name, ())]
        neighbours += [c for c in every if node.name in base_names(c)]
        for other in neighbours:
            if id(other) not in seen:
                seen.add(id(other))
                found.append(other)
                todo.append(other)
    return found


# -- applied to suggestions and to the other files of a rename ---------------------------------
def safe_suggestion(suggestion: Suggestion, text: str, func: FunctionInfo, top_k: int,
                    origin: Origin | None = None, budget_s: float | None = None) -> Suggestion:
    """``suggestion`` without the names that would clash (:func:`clashes`; the current name
    stays), cut to ``top_k``, with the current name's rank recomputed; when the class
    hierarchy keeps the name and the model had names to offer, ``kept`` says why (the hover
    shows it: otherwise a badly named method would show nothing, with no reason)."""
    where = origin or origin_of(None)
    reason = name_kept(text, func, where, budget_s)
    clashing = _clashes(text, func, (name for name, _, _ in suggestion.suggestions), where, lambda: reason)
    kept = [item for item in suggestion.suggestions
            if item[0] not in clashing or item[1] == suggestion.current_label][: max(0, top_k)]
    labels = [label for _, label, _ in kept]
    rank = labels.index(suggestion.current_label) + 1 if suggestion.current_label in labels else None
    return replace(suggestion, suggestions=kept, current_rank=rank,
                   kept=reason if suggestion.worth_offering() else None)


def identifiers(text: str) -> frozenset[str]:
    """Every identifier of ``text`` (names, parameters, imports, attributes, keyword
    arguments), or every word when it does not parse: a name of this set cannot be given to
    a function that ``text`` uses without risking a clash there."""
    try:
        tree = ast.parse(text)
    except _PARSE_ERRORS:
        return frozenset(_WORD_RE.findall(text))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            names.add(node.id)
        elif isinstance(node, ast.arg | ast.keyword) and node.arg is not None:
            names.add(node.arg)
        elif isinstance(node, ast.Attribute):
            names.add(node.attr)
        elif isinstance(node, ast.alias):
            names.add((node.asname or node.name).partition(".")[0])
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Global | ast.Nonlocal):
            names.update(node.names)
        elif isinstance(node, ast.ExceptHandler | ast.MatchAs | ast.MatchStar) and node.name:
            names.add(node.name)
        elif isinstance(node, ast.MatchMapping) and node.rest:
            names.add(node.rest)
    return frozenset(names)


def compiles(text: str) -> bool:
    """Whether ``text`` is valid Python (a rename must not turn valid code into invalid)."""
    try:
        compile(text, "<rename>", "exec", flags=ast.PyCF_ONLY_AST, dont_inherit=True)
    except _PARSE_ERRORS:
        return False
    return True
