"""The ``pathfusion`` command line (design §7).

Why one entry point for everything: the editor, the demo and the training pipeline must
agree on the extractor and the model files, and a single CLI is the simplest way to keep
them honest.  Commands whose implementation has not landed yet exit with status 2 and say
so on stderr; errors never print a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from .parsing import Document
from .paths import EXTRACTOR_VERSION, MAX_CONTEXTS, context_space, name_label, to_code2vec_line

NOT_YET = {
    "serve": "the language server",
    "index": "workspace indexing",
    "search": "semantic search",
    "suggest": "name suggestions (needs the trained code2vec model)",
    "eval": "model evaluation",
    "train": "model training",
    "export": "ONNX export",
}


class CliError(Exception):
    """An error the user can fix; printed without a traceback."""


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


def cmd_corpus(args: argparse.Namespace) -> int:
    from model_export.corpus import main as corpus_main

    return corpus_main(args.rest)


PASSTHROUGH = {"corpus", *NOT_YET}
"""Commands whose arguments are parsed by the implementation they delegate to."""


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
    corpus = sub.add_parser("corpus", help="build the training corpus (see model_export/corpus.py)",
                            add_help=False)
    corpus.add_argument("rest", nargs=argparse.REMAINDER)
    corpus.set_defaults(func=cmd_corpus)
    for name, what in NOT_YET.items():
        stub = sub.add_parser(name, help=f"{what} (not available yet)", add_help=False)
        stub.add_argument("rest", nargs=argparse.REMAINDER)
        stub.set_defaults(func=None, what=what)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:
        if args.command not in PASSTHROUGH:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.rest = [*extra, *args.rest]
    if args.func is None:
        print(f"pathfusion {args.command}: {args.what} is not available yet in this version.",
              file=sys.stderr)
        return 2
    try:
        return int(args.func(args))
    except CliError as exc:
        print(f"pathfusion {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
