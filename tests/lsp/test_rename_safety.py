"""Offered renames never create a name clash (:mod:`pathfusion.server.rename_safety`), through the real
server.

The model is a tiny code2vec export whose ranking is fixed by construction
(:func:`make_ranked_run`): every function gets the same code vector, and the output
weights give each label of :data:`RANKING` a chosen logit — the clashing names first.  So
the server is asked, on the real path (hover, code actions, resolve), to offer exactly the
names that would break the code, ranked top.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from lsprotocol import types
from pytest_lsp import LanguageClient

from pathfusion.server.code2vec import Suggestion
from pathfusion.server.parsing import Document
from pathfusion.server.rename_safety import clashes, identifiers, safe_suggestion
from tests.helpers.lsp import apply_edits, code_actions, hover, initialize, open_doc
from tests.rename_checks import assert_clean_rename

MODULE = '''import json
import os.path as osp

registry = {}


def do_load(path):
    with open(path) as fh:
        return json.load(fh)


def do_count(items):
    return len(items)


class Store:
    size = 0

    def do_sum(self, key):
        self.cache = {}
        return self.size + key


class Cached(Store):
    def lookup(self):
        return self.do_sum(1)


def do_outer(x):
    def inner(y):
        return x + y
    total = inner(1)
    return total


print(registry)
'''

RANKING = [
    "json", "osp", "registry", "class", "print", "path", "open", "len", "size", "cache",
    "lookup", "total", "x", "y", "key", "items", "match", "load|config", "read|file",
]
"""Labels, most probable first: the clashing names of :data:`CLASHES` lead."""

CLASHES = {  # function → the names that must never be offered for it
    "do_load": {"json", "osp", "registry", "class", "print", "path", "open", "len"},
    "do_count": {"json", "osp", "registry", "class", "print", "open", "len", "items"},
    "Store.do_sum": {"class", "size", "cache", "key", "lookup"},
    "do_outer": {"json", "osp", "registry", "class", "print", "open", "len", "total", "x", "y"},
    "do_outer.<locals>.inner": {"class", "total", "x", "y"},
}
SAFE = {"match", "load_config", "read_file"}
"""Offered for every function: ``match`` is a soft keyword, a valid name."""


def make_ranked_run(folder: Path, ranking: list[str]) -> Path:
    """A code2vec run folder whose model ranks ``ranking`` first, in that order, for any
    function: every token and path embeds to the same vector, so every function gets the
    same code vector ``c``, and label ``i`` of ``ranking`` gets the logit ``30 - i`` (the
    others 0)."""
    torch = pytest.importorskip("torch")
    from pathfusion.model_export.c2v_data import PAD, UNK, Vocab, Vocabs
    from pathfusion.model_export.code2vec import Code2Vec, Code2VecConfig

    torch.manual_seed(0)
    labels = [*ranking, *(f"filler|{i}" for i in range(20))]
    vocabs = Vocabs(Vocab([PAD, UNK, "tok"]), Vocab([PAD, UNK, "path"]), Vocab([PAD, UNK, *labels]))
    config = Code2VecConfig(token_vocab=len(vocabs.tokens), path_vocab=len(vocabs.paths),
                            target_vocab=len(vocabs.targets), epochs=1)
    model = Code2Vec(len(vocabs.tokens), len(vocabs.paths), len(vocabs.targets), config)
    with torch.no_grad():
        vector = torch.full((config.embed_dim,), 0.1)
        model.token_embedding.weight[1:] = vector
        model.path_embedding.weight[1:] = vector
        code = torch.tanh(model.transform(torch.cat([vector, vector, vector])))
        model.targets.weight.zero_()
        for rank, label in enumerate(ranking):
            model.targets.weight[vocabs.targets.get(label)] = (30.0 - rank) * code / code.dot(code)
    folder.mkdir(parents=True, exist_ok=True)
    vocabs.save(folder / "vocab")
    (folder / "config.json").write_text(json.dumps(config.to_dict()))
    torch.save(model.state_dict(), folder / "best.pt")
    return folder


@pytest.fixture(scope="module")
def ranked_models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch = pytest.importorskip("torch")
    pytest.importorskip("onnx")
    from pathfusion.model_export.export_code2vec import export

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("ranked-models")
    out = root / "models"
    export(make_ranked_run(root / "run", RANKING), out, top_k=len(RANKING))
    return out


def ranked_options(models_dir: Path) -> dict[str, Any]:
    return {"modelsDir": str(models_dir), "topK": len(RANKING), "hoverMinConfidence": 1.0}


def name_position(text: str, qualname: str) -> tuple[int, int]:
    func = next(f for f in Document(text).functions() if f.qualname == qualname)
    return func.name_span.start.line, func.name_span.start.character


def offered(actions: list[types.CodeAction], old: str) -> list[str]:
    prefix = f"Rename `{old}` → `"
    assert all(a.title.startswith(prefix) for a in actions), [a.title for a in actions]
    return [a.title[len(prefix):-1] for a in actions]


# -- through the server -----------------------------------------------------------------------
async def test_clashing_names_are_never_offered(
    client: LanguageClient, ranked_models_dir: Path, tmp_path: Path
) -> None:
    """Each kind of clash — a module import, a global, a class member for a method, a
    parameter of the function itself, a builtin used in the module, a keyword, an
    enclosing function's locals for a nested function — ranked top by the model, is
    missing from the hover and the code actions; the safe names are there, in order."""
    workspace = tmp_path / "ws"
    workspace.mkdir()
    (workspace / "mod.py").write_text(MODULE)
    await initialize(client, workspace, ranked_options(ranked_models_dir))
    uri = open_doc(client, workspace / "mod.py")
    for qualname, clashing in CLASHES.items():
        line, character = name_position(MODULE, qualname)
        old = qualname.rpartition(".")[2]
        names = offered(await code_actions(client, uri, line, character), old)
        assert not clashing & set(names), (qualname, sorted(clashing & set(names)))
        assert set(names) >= SAFE, (qualname, names)
        assert names == sorted(names, key=lambda n: RANKING.index(n.replace("_", "|"))), names
        found = await hover(client, uri, line, character)
        assert found is not None and isinstance(found.contents, types.MarkupContent)
        shown = {row.split("`")[1] for row in found.contents.value.splitlines() if row[:1].isdigit()}
        assert not clashing & shown, (qualname, sorted(clashing & shown))
        assert shown >= SAFE


async def test_applied_rename_compiles_without_new_pyflakes_messages(
    client: LanguageClient, ranked_models_dir: Path, tmp_path: Path
) -> None:
    """The top offered rename of each function, resolved and applied, leaves a module that
    compiles and that pyflakes finds nothing new in."""
    workspace = tmp_path / "ws"
    workspace.mkdir()
    (workspace / "mod.py").write_text(MODULE)
    await initialize(client, workspace, ranked_options(ranked_models_dir))
    uri = open_doc(client, workspace / "mod.py")
    for qualname in CLASHES:
        line, character = name_position(MODULE, qualname)
        actions = await code_actions(client, uri, line, character)
        assert actions
        resolved = await client.code_action_resolve_async(actions[0])
        assert resolved.disabled is None, resolved.disabled
        assert resolved.edit is not None and resolved.edit.document_changes
        [change] = resolved.edit.document_changes
        assert isinstance(change, types.TextDocumentEdit) and change.text_document.uri == uri
        old = qualname.rpartition(".")[2]
        assert isinstance(actions[0].data, dict)
        new = actions[0].data["new_name"]
        assert_clean_rename({"mod.py": MODULE}, {"mod.py": apply_edits(MODULE, change.edits)}, old, new)


async def test_resolve_refuses_a_clashing_name(
    client: LanguageClient, ranked_models_dir: Path, tmp_path: Path
) -> None:
    """An action naming a clashing name (a client replaying an old action, a hand-made
    one) resolves to a clear refusal, not to an edit; so does a name that the rename's
    other files already use."""
    workspace = tmp_path / "ws"
    workspace.mkdir()
    (workspace / "mod.py").write_text(MODULE)
    (workspace / "user.py").write_text(
        "from mod import do_load\n\n\ndef load_config():\n    return do_load('x')\n")
    await initialize(client, workspace, ranked_options(ranked_models_dir))
    uri = open_doc(client, workspace / "mod.py")
    line, character = name_position(MODULE, "do_load")
    [action, *_] = await code_actions(client, uri, line, character)
    assert isinstance(action.data, dict)
    for new_name, reason in (("json", "json"), ("class", "keyword"), ("load_config", "user.py")):
        forged = types.CodeAction(title=f"Rename `do_load` → `{new_name}`", kind=action.kind,
                                  data={**action.data, "new_name": new_name})
        resolved = await client.code_action_resolve_async(forged)
        assert resolved.edit is None, new_name
        assert resolved.disabled is not None and reason in resolved.disabled.reason, resolved.disabled


# -- units -------------------------------------------------------------------------------------
def test_clash_reasons_name_the_binding() -> None:
    doc = Document(MODULE)
    by_name = {f.qualname: f for f in doc.functions()}
    found = clashes(MODULE, by_name["do_load"], ["json", "path", "print", "class", "match", "do_load", "1x"])
    assert found == {"json": "used in `do_load`", "path": "a parameter of `do_load`", "print": "used in the module",
                     "class": "a Python keyword", "1x": "not an identifier"}
    assert clashes(MODULE, by_name["Store.do_sum"], ["size", "cache", "lookup", "json"]) == {
        "size": "already defined in class `Store`", "cache": "an attribute of class `Store`",
        "lookup": "a member of the related class `Cached`"}
    assert clashes(MODULE, by_name["do_outer.<locals>.inner"], ["total", "do_outer", "json"]) == {
        "total": "already defined in `do_outer`"}


def test_uncompilable_text_is_safe_side() -> None:
    """While a document does not compile, any word of it clashes."""
    broken = MODULE + "\ndef broken(:\n    pass\n"
    func = next(f for f in Document(broken).functions() if f.qualname == "do_count")
    assert set(clashes(broken, func, ["size", "fh", "load_config"])) == {"size", "fh"}


def test_nested_scopes_follow_python_rules() -> None:
    text = '''def target():
    return 1


def user():
    data = 2
    return target() + data


def other():
    value = 3
    return value


def shadowed():
    def inner():
        return name
    name = 4
    return inner()
'''
    funcs = {f.qualname: f for f in Document(text).functions()}
    # `data` is a local of a function that calls `target`: the call would resolve to it
    found = clashes(text, funcs["target"], ["data", "value", "name"])
    assert set(found) == {"data"} and "which uses `target`" in found["data"]
    # `name` is used by `inner` but bound in `shadowed`, so renaming `other` to it is fine
    assert clashes(text, funcs["other"], ["name"]) == {}


def test_safe_suggestion_keeps_the_current_name_and_reranks() -> None:
    func = next(f for f in Document(MODULE).functions() if f.qualname == "do_load")
    suggestion = Suggestion("do_load", "do_load", 7, "do|load", [("json", "json", 0.5), ("do_load", "do|load", 0.2),
                                               ("read_file", "read|file", 0.1), ("match", "match", 0.1)], 2)
    safe = safe_suggestion(suggestion, MODULE, func, top_k=2)
    assert safe.suggestions == [("do_load", "do|load", 0.2), ("read_file", "read|file", 0.1)]
    assert safe.current_rank == 1


def test_identifiers_of_other_files() -> None:
    assert {"f", "load_config", "x", "attr", "kw", "E"} <= identifiers(
        "from mod import f\nload_config = f(x).attr\ng(kw=1)\ntry:\n    pass\nexcept ValueError as E:\n    pass\n")
    assert "broken" in identifiers("def broken(:\n")


def test_classes_are_found_in_every_kind_of_block() -> None:
    """The statement walk finds every class ``ast.walk`` finds (nested in functions, classes,
    if/else, try/except/finally, with, loops and match cases) — over real code too."""
    import ast
    import sysconfig
    from pathlib import Path

    from pathfusion.server.overrides import classes_by_name

    def every(tree: ast.Module) -> list[ast.ClassDef]:
        return [node for nodes in classes_by_name(tree).values() for node in nodes]

    text = (
        "class A:\n    class B: pass\n"
        "def f():\n    class C: pass\n"
        "if x:\n    class D: pass\nelse:\n    class E: pass\n"
        "try:\n    class F: pass\nexcept E:\n    class G: pass\nelse:\n    class H: pass\nfinally:\n    class I: pass\n"
        "with m:\n    class J: pass\n"
        "for i in y:\n    class K: pass\nelse:\n    class L: pass\n"
        "while z:\n    class M: pass\n"
        "match v:\n    case 1:\n        class N: pass\n"
        "async def g():\n    async with q:\n        class O: pass\n"
    )
    found = sorted(node.name for node in every(ast.parse(text)))
    assert found == list("ABCDEFGHIJKLMNO")
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    for name in ("argparse.py", "typing.py", "dataclasses.py", "unittest/mock.py"):
        tree = ast.parse((stdlib / name).read_text(encoding="utf-8"))
        assert ({id(n) for n in ast.walk(tree) if isinstance(n, ast.ClassDef)}
                == {id(n) for n in every(tree)}), name


def test_an_analysis_started_ahead_is_used_not_repeated(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """A hover starts the module's analysis beside the naming model; the rename rules then
    take that analysis (waiting for it if need be) instead of doing it again."""
    import threading

    from pathfusion.server import rename_safety

    built: list[str] = []
    release = threading.Event()
    real = rename_safety.ModuleNames

    class Slow(real):  # type: ignore[misc, valid-type]
        def __init__(self, text: str) -> None:
            built.append(threading.current_thread().name)
            release.wait(5)
            super().__init__(text)

    monkeypatch.setattr(rename_safety, "ModuleNames", Slow)
    text = "class A:\n    def f(self):\n        self.load = 1\n\n\ndef g():\n    pass\n# started ahead\n"
    rename_safety.start_module_names(text)
    rename_safety.start_module_names(text)  # already under way: not started twice
    waiter = threading.Thread(target=lambda: built.append(type(rename_safety.module_names(text)).__name__))
    waiter.start()
    release.set()
    waiter.join(5)
    assert built[0].startswith("pathfusion-names") and built[1:] == ["Slow"]  # built once, on its thread
    assert rename_safety.module_names(text).tree() is not None  # cached, with its AST
    assert len(built) == 2 and not rename_safety._STARTED
