"""``python -m pathfusion.model_export.naming_samples``: sample predictions of the shipped naming head on
unseen code, as a Markdown table for ``docs/results.md``.

A seeded random sample of the naming functions under ``--projects`` (default: the held-out
standard library), each with its real name, the head's top three (ranked as the editor ranks
them, with the model's probabilities) and whether the editor would offer a suggestion there
(:meth:`pathfusion.server.code2vec.Suggestion.worth_offering`: the real name is unlikely enough).
"""

from __future__ import annotations

import argparse
import random
from collections.abc import Sequence
from pathlib import Path

from pathfusion.server.code2vec import UNLIKELY_CURRENT_NAME, Suggestion
from pathfusion.server.embedder import load_embedder
from pathfusion.server.models import default_models_dir
from pathfusion.server.name_generator import NameGenerator

from .evaluate import iter_project_examples


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pathfusion.model_export.naming_samples", description=__doc__.splitlines()[0])
    parser.add_argument("--projects", type=Path, default=Path("data/heldout/stdlib"))
    parser.add_argument("--models", type=Path, default=None)
    parser.add_argument("--count", type=int, default=30)
    parser.add_argument("--seed", type=int, default=2025)
    args = parser.parse_args(argv)
    models = args.models or default_models_dir()
    generator = NameGenerator.load(models, load_embedder("onnx", models, device="cpu"), "cpu")
    examples = list(iter_project_examples(args.projects))
    chosen = random.Random(args.seed).sample(examples, min(args.count, len(examples)))
    print("| real name | top 3 (probability) | suggestion offered |")
    print("|---|---|---|")
    for example in chosen:
        names, current = generator.names(example.masked, 3, example.label)
        shown = ", ".join(f"`{label.replace('|', '_')}` ({p:.2f})" for label, p in names)
        label = example.label
        suggestion = Suggestion(label, label, 0, label, [(n.replace("|", "_"), n, p) for n, p in names],
                                current=current)
        offered = bool(suggestion.worth_offering(UNLIKELY_CURRENT_NAME))
        print(f"| `{example.label.replace('|', '_')}` | {shown} | {'yes' if offered else 'no'} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
