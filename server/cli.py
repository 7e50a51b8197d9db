"""The ``pathfusion`` command line (docs/design.md §7).

Why one entry point for everything: the editor, the demo and the training pipeline must
agree on the extractor and the model files, and a single CLI is the simplest way to keep
them honest.  Errors go to stderr with a non-zero exit status and never print a traceback;
a training verb whose extra is not installed says which one and how to install it.

The models come from the model hub (:class:`pathfusion.server.runtime.ModelHub`) with the settings
that ``--models``, ``--device`` and ``--variant`` mean, so that ``suggest``, ``index`` and
``search`` use what the editor would.  The verbs that delegate to the training package
(``train``, ``export``, ``corpus``, ``eval``) are in :mod:`pathfusion.server.cli_train`, registered only
where their dependencies are installed; ``serve``'s arguments are in :mod:`pathfusion.server.cli_base`,
which ``python -m pathfusion.server.lsp`` shares, so that the server never imports the CLI.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import cli_train
from .cli_base import (
    SERVE_OPTIONS,
    CliError,
    add_serve_arguments,
    check_serve_arguments,
    is_loopback,
    parse_tcp,
)
from .parsing import Document
from .paths import EXTRACTOR_VERSION, MAX_CONTEXTS, context_space, name_label, to_code2vec_line
from .settings import FUSION_VARIANTS, Settings

PRELOAD_JOIN_S = 60.0
"""How long an exiting server waits for the models it started loading (about a second)."""

__all__ = [  # and, from pathfusion.server.cli_base, what tests and pathfusion.server.lsp's users import from here
    "SERVE_OPTIONS", "CliError", "add_serve_arguments", "build_parser", "check_serve_arguments",
    "is_loopback", "main", "parse_tcp", "with_default_command",
]


def _settings(models: Path | None, device: str, variant: str = "default") -> Settings:
    """The server's settings for ``--models``, ``--device`` and ``--variant``, so that the
    CLI asks the model hub (:class:`pathfusion.server.runtime.ModelHub`) for what the editor would get."""
    return Settings(models_dir=str(models) if models is not None else None, device=device,
                    fusion_variant=variant)


def _read_document(path: Path) -> Document:
    from .parsing import SourceError, decode_source

    try:
        data = path.read_bytes()
    except FileNotFoundError as exc:
        raise CliError(f"{path}: no such file") from exc
    except IsADirectoryError as exc:
        raise CliError(f"{path}: is a directory, expected a Python file") from exc
    except PermissionError as exc:
        raise CliError(f"{path}: permission denied") from exc
    try:
        return Document(decode_source(data, origin=str(path)), uri=path.resolve().as_uri())
    except SourceError as exc:
        raise CliError(str(exc)) from exc


def cmd_extract(args: argparse.Namespace) -> int:
    """Print the functions of a file and their path contexts."""
    doc = _read_document(args.file)
    functions = doc.functions()
    if args.line is not None:
        line = args.line - 1
        functions = [f for f in functions if f.span.start.line <= line <= f.span.end.line][-1:]
        if not functions:
            raise CliError(f"{args.file}:{args.line}: no function there")
    rows = []
    for func in functions:
        space = context_space(func.node, doc.source, func.name)
        contexts = space.sample(args.max_contexts)
        label = name_label(func.name)
        if args.format == "c2v":
            print(to_code2vec_line(label, contexts))
            continue
        row = {
            "qualname": func.qualname,
            "label": label,
            "line": func.span.start.line + 1,
            "end_line": func.span.end.line + 1,
            "decorators": list(func.decorators),
            "docstring": func.docstring,
            "contexts_total": space.total,
            "contexts": [c.to_text() for c in contexts],
        }
        rows.append(row)
        if args.format == "text":
            print(f"{func.qualname}  (line {row['line']}, label {label}, "
                  f"{len(contexts)}/{space.total} contexts)")
            for context in contexts[: args.show]:
                print(f"    {context.to_text()}")
    if args.format == "json":
        json.dump({"extractor_version": EXTRACTOR_VERSION, "file": str(args.file), "functions": rows},
                  sys.stdout, indent=1)
        print()
    return 0


def _suggest_text(result: dict) -> None:
    for func in result["functions"]:
        head = f"{func['qualname']} (line {func['line']})"
        if not func["suggestions"]:
            reason = "no path contexts" if func["contexts"] == 0 else "no known name"
            print(f"{head}: no suggestions ({reason})")
            continue
        names = ", ".join(f"{s['name']} {s['probability']:.2f}" for s in func["suggestions"])
        rank = func["current_rank"]
        note = (f"current name `{func['name']}` is #{rank}" if rank is not None
                else f"current name `{func['name']}` not in the top {len(func['suggestions'])}")
        print(f"{head}: {names}  [{note}]")


def cmd_suggest(args: argparse.Namespace) -> int:
    """Name suggestions for the functions of a file.

    ``--json`` prints (stable; fields are only ever added)::

        {"file": str,
         "model": {"name": "code2vec" | "fusion:<variant>", "extractor_version": str, "sha256": str,
                   "vocab_sizes": {...}, "providers": [...]},
         "functions": [{"qualname": str, "name": str, "line": int (1-based, first line of
                        the definition), "label": str (the current name as a label),
                        "contexts": int (path contexts used),
                        "suggestions": [{"name": str (rendered in the file's style),
                                         "label": str ("a|b"), "probability": float}],
                        "current_rank": int | null (1-based rank of the current name)}]}

    Functions without path contexts have no suggestions; dunder methods are left out.
    """
    from .code2vec import functions_at, suggest_for_document
    from .models import ModelError
    from .runtime import ModelHub

    if args.top_k < 1:
        raise CliError(f"--top-k must be at least 1, got {args.top_k}")
    doc = _read_document(args.file)
    if args.line is not None and not functions_at(doc, args.line):
        raise CliError(f"{args.file}:{args.line}: no function there")
    try:
        model = ModelHub().naming(_settings(args.models, args.device, args.variant))
        suggestions = suggest_for_document(doc, model, top_k=args.top_k, line=args.line)
    except ModelError as exc:
        raise CliError(str(exc)) from exc
    result = {
        "file": str(args.file),
        "model": getattr(model, "info", {}),
        "functions": [s.to_json() for s in suggestions],
    }
    if args.json:
        json.dump(result, sys.stdout, indent=1)
        print()
    elif not suggestions and args.line is not None:
        print(f"{args.file}:{args.line}: dunder methods get no name suggestions")
    elif not suggestions:
        print(_no_functions_note(args.file, doc))
    else:
        _suggest_text(result)
    return 0


def _no_functions_note(path: Path, doc: Document) -> str:
    """Why ``suggest`` printed no names: an empty answer would read as a silent failure.
    A file that does not parse may hide its functions from tree-sitter, so that is said."""
    if any(doc.functions()):
        return f"{path}: only dunder methods here; they get no name suggestions"
    if doc.tree.root_node.has_error:
        return f"{path}: no function found (the file has syntax errors; fix them to get suggestions)"
    return f"{path}: no function definitions"


def _open_index(workspace: Path, models: Path | None, device: str) -> Any:
    """The stored index of ``workspace`` with the search model the server would use for the
    same models folder and device (errors as :class:`CliError`)."""
    from .index import WorkspaceIndex
    from .models import ModelError
    from .runtime import ModelHub

    if not workspace.exists():
        raise CliError(f"{workspace}: no such directory")
    if not workspace.is_dir():
        raise CliError(f"{workspace}: not a directory")
    hub, settings = ModelHub(), _settings(models, device)
    try:
        hub.embedder(settings)  # without it there is no search: its error is the CLI's
    except ModelError as exc:
        raise CliError(str(exc)) from exc
    try:
        return WorkspaceIndex.open(workspace, hub.search_model(settings))
    except OSError as exc:
        raise CliError(f"cannot open the index of {workspace}: {exc}") from exc


def _run_indexing(index: Any, show_progress: bool) -> Any:
    """``index.sync()`` with a tqdm bar on stderr; Ctrl-C stops it cleanly."""
    from tqdm import tqdm

    bar = tqdm(total=0, unit="file", file=sys.stderr, disable=not show_progress, leave=False,
               desc="indexing")
    def progress(done: int, total: int) -> None:
        if bar.total != total:
            bar.total = total
        bar.n = done
        bar.refresh()

    try:
        stats = index.sync(progress=progress)
    except KeyboardInterrupt as exc:
        raise CliError("interrupted; the index keeps what was committed") from exc
    except OSError as exc:
        raise CliError(f"indexing failed: {exc}") from exc
    finally:
        bar.close()
    return stats


def cmd_index(args: argparse.Namespace) -> int:
    """``pathfusion index DIR [--models DIR] [--json]``: build or update the workspace index.

    ``--json`` prints (stable; fields are only ever added)::

        {"workspace": str, "index_dir": str, "files": int, "functions": int,
         "scanned": int, "changed": int, "removed": int, "embedded": int, "cached": int,
         "skipped": [{"path": str, "reason": str}], "seconds": float,
         "functions_per_second": float, "cancelled": bool, "rebuild_reason": str | null}
    """
    index = _open_index(args.dir, args.models, args.device)
    try:
        stats = _run_indexing(index, show_progress=not args.quiet)
        if args.json:
            json.dump({"workspace": str(index.root), "index_dir": str(index.dir), **stats.to_json()},
                      sys.stdout, indent=1)
            print()
            return 0
        if stats.rebuild_reason:
            print(f"note: {stats.rebuild_reason}", file=sys.stderr)
        for path, reason in stats.skipped:
            print(f"skipped {path}: {reason}", file=sys.stderr)
        print(f"{stats.files} files, {stats.functions} functions "
              f"({stats.embedded} embedded, {stats.cached} cached, {stats.changed} files changed, "
              f"{stats.removed} removed) in {stats.seconds:.2f} s "
              f"({stats.functions_per_second:.1f} functions/s); index in {index.dir}")
    finally:
        index.close()
    return 0


def cmd_search(args: argparse.Namespace) -> int:
    """``pathfusion search QUERY... [--workspace DIR] [--k N] [--json]``: ranked functions.

    The index is brought up to date first (incrementally; a bar on a terminal, otherwise
    one line on stderr when functions had to be embedded).  ``--json`` prints a list
    (stable; fields are only ever added) of ``{"uri", "range": {"start": {"line",
    "character"}, "end": {...}} (0-based, UTF-16), "name", "qualname", "score", "snippet",
    "path", "line" (1-based)}``, best first; results below the relevance floor
    (:data:`pathfusion.server.ranking.RELEVANCE_FLOOR`) are left out, as in the editor.
    The text form gives each result a line (score, ``path:line``, qualified name) and, when
    the function has a docstring, its first line indented below: what the function does,
    as the editors show it.
    """
    from .ranking import relevant
    from .snippets import snippet_parts

    if args.k < 1:
        raise CliError(f"--k must be at least 1, got {args.k}")
    query = search_query(args.query, workspace_given=args.workspace is not None)
    index = _open_index(args.workspace or Path("."), args.models, args.device)
    try:
        show_bar = not args.json and sys.stderr.isatty()
        stats = _run_indexing(index, show_progress=show_bar)
        if not show_bar and stats.embedded:
            # Without a terminal there was no bar: say why this search took seconds.
            print(f"indexed first: {_count(stats.embedded, 'function')} embedded from "
                  f"{_count(stats.changed, 'changed file')} in {stats.seconds:.1f} s", file=sys.stderr)
        found = index.search(query, k=args.k)
        _, functions = index.counts()
    finally:
        index.close()
    results = relevant(found)
    if args.json:
        json.dump([r.to_json() for r in results], sys.stdout, indent=1)
        print()
        return 0
    if not results:
        print("no results: the workspace has no indexed functions" if not functions else
              f"no results: none of the {functions} indexed functions is close enough to the query")
    for r in results:
        print(f"{r.score:6.3f}  {r.path}:{r.line}  {r.qualname}")
        _, summary = snippet_parts(r.snippet)
        if summary:
            print(f"        {summary}")
    return 0


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def search_query(words: Sequence[str], workspace_given: bool) -> str:
    """The query of ``pathfusion search``: its words joined by spaces, so that quoting is
    optional.  Why the check: ``pathfusion index DIR`` takes its folder first, so
    ``pathfusion search DIR some words`` is a natural slip — searched as written, it would
    quietly search the current folder for the folder's path.  Only a word spelled as a path
    (``/``, ``.``, ``..``, ``~``) counts: ``pathfusion search json decoder`` beside a ``json/``
    package is a query."""
    query = " ".join(words).strip()
    if not query:
        raise CliError("the query is empty")
    first = words[0] if words else ""
    spelled_as_path = "/" in first or os.sep in first or first in (".", "..") or first.startswith("~")
    if not workspace_given and len(words) > 1 and spelled_as_path and Path(first).expanduser().is_dir():
        rest = " ".join(words[1:])
        raise CliError(f"{words[0]} is a folder: the workspace goes after --workspace, as in "
                       f"pathfusion search --workspace {words[0]} \"{rest}\"")
    return query


def cmd_serve(args: argparse.Namespace) -> int:
    """``pathfusion serve [--stdio | --tcp HOST:PORT [--allow-remote]] [--models DIR]``: the
    language server.  ``--tcp`` is for local use: it has no authentication
    (:func:`check_serve_arguments`)."""
    check_serve_arguments(args)
    from .runtime import preload

    # The naming model loads while the server's modules import (pathfusion.server.runtime.preload).
    loading = preload(Settings(models_dir=str(args.models) if args.models is not None else None))
    try:
        from .lsp import serve

        return serve(args)
    finally:
        # A client that leaves during the load (an editor closed at once) must not end the
        # process under onnxruntime's feet: a session half-built on a daemon thread aborts
        # the interpreter's exit ("terminate called without an active exception").
        loading.join(timeout=PRELOAD_JOIN_S)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pathfusion", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"pathfusion 0.1.0 ({EXTRACTOR_VERSION})")
    sub = parser.add_subparsers(dest="command", required=True)
    extract = sub.add_parser("extract", help="print the functions of FILE and their path contexts")
    extract.add_argument("file", type=Path)
    extract.add_argument("--line", type=int, help="only the function enclosing this 1-based line")
    extract.add_argument("--format", choices=("text", "json", "c2v"), default="text")
    extract.add_argument("--json", dest="format", action="store_const", const="json")
    extract.add_argument("--max-contexts", type=int, default=MAX_CONTEXTS)
    extract.add_argument("--show", type=int, default=5, help="contexts printed per function (text)")
    extract.set_defaults(func=cmd_extract)
    suggest = sub.add_parser("suggest", help="name suggestions for the functions of FILE")
    suggest.add_argument("file", type=Path)
    suggest.add_argument("--line", type=int, help="only the function enclosing this 1-based line")
    suggest.add_argument("--json", action="store_true", help="machine-readable output (stable)")
    suggest.add_argument("--top-k", type=int, default=5)
    suggest.add_argument("--models", type=Path, default=None,
                         help="models folder (default: $PATHFUSION_MODELS or models/ of the repository)")
    suggest.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    suggest.add_argument("--variant", choices=FUSION_VARIANTS, default="default",
                         help="naming model: default (the manifest's best), code2vec, llm or a fusion")
    suggest.set_defaults(func=cmd_suggest)
    index = sub.add_parser("index", help="build or update the workspace index of DIR")
    index.add_argument("dir", type=Path)
    index.add_argument("--models", type=Path, default=None,
                       help="models folder (default: $PATHFUSION_MODELS or models/ of the repository)")
    index.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    index.add_argument("--json", action="store_true", help="machine-readable counts (stable)")
    index.add_argument("--quiet", action="store_true", help="no progress bar")
    index.set_defaults(func=cmd_index)
    search = sub.add_parser("search", help="search the functions of a workspace by meaning")
    search.add_argument("query", nargs="+", help="what to find: a sentence or a name (quotes optional)")
    search.add_argument("--workspace", type=Path, default=None,
                        help="workspace folder (default: the current directory)")
    search.add_argument("--k", type=int, default=10, help="number of results")
    search.add_argument("--models", type=Path, default=None,
                        help="models folder (default: $PATHFUSION_MODELS or models/ of the repository)")
    search.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    search.add_argument("--json", action="store_true", help="machine-readable results (stable)")
    search.set_defaults(func=cmd_search)
    serve = sub.add_parser("serve", help="the language server (stdio by default)")
    add_serve_arguments(serve)
    serve.set_defaults(func=cmd_serve)
    left_out = cli_train.register(sub)
    if left_out:
        parser.epilog = (f"Not available here: {', '.join(left_out)} (they need the train extra: "
                         f"{cli_train.INSTALL}).")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((arg for arg in argv if not arg.startswith("-")), None)
    reason = cli_train.unavailable(command) if command is not None else None
    if reason is not None:  # a training verb this installation cannot run: not registered
        print(f"pathfusion {command}: error: {reason}", file=sys.stderr)
        return 1
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:
        if args.command not in cli_train.PASSTHROUGH:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.rest = [*extra, *args.rest]
    try:
        return int(args.func(args))
    except CliError as exc:
        print(f"pathfusion {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        return 0


def with_default_command(argv: Sequence[str]) -> int:
    """:func:`main`, with ``serve`` implied when ``argv`` is empty or starts with one of
    ``serve``'s own options (how editors start language servers: ``python -m pathfusion --stdio``)."""
    args = list(argv)
    if not args or args[0].split("=", 1)[0] in SERVE_OPTIONS:
        args.insert(0, "serve")
    return main(args)


if __name__ == "__main__":
    raise SystemExit(main())
