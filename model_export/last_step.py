"""``python -m pathfusion.model_export.last_step RUN --out DIR``: a naming run's last
checkpoint written as a ``best/``-like folder.

Why: a run's ``best/`` holds the step its *own* validation picked (torch, one subset of the
validation split), and nothing else of the run can be exported. To score the run's last step
through the runtime as well — on the whole validation split, as the shipped models are chosen
(`docs/results.md`, "A second chunk") — its weights must be a folder that ``export embedder
--model-dir`` and ``export naming --run-best`` read. The checkpoint holds the encoder, the
decoder and the fusion; ``best/`` the shapes, the tokenizer and the context vocabulary they
belong with.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from pathfusion.server.context_vocab import VOCAB_FILE, ContextVocab

from .export_embedder import MeanPooledEncoder, load_reference
from .naming_model import DECODER_META, NamingModel, load_decoder, load_fusion
from .train_naming import NamingTrainConfig, save_head


def write_last_step(run: Path, out: Path) -> dict[str, Any]:
    """Write ``run``'s checkpoint into ``out``; returns the run state it was taken at."""
    best, checkpoint = run / "best", run / "checkpoint.pt"
    if not (best / DECODER_META).is_file() or not checkpoint.is_file():
        raise FileNotFoundError(f"{run} is not a naming run with a checkpoint and a best/ folder")
    bert, _ = load_reference(best)
    decoder = load_decoder(best)
    fusion = load_fusion(best, int(bert.config.hidden_size))
    saved = torch.load(checkpoint, map_location="cpu", weights_only=False)
    NamingModel(bert, decoder, fusion).load_state_dict(saved["model"])
    config = NamingTrainConfig(**json.loads((run / "config.json").read_text()))
    vocab = ContextVocab.load(best / VOCAB_FILE) if (best / VOCAB_FILE).is_file() else None
    save_head(out, MeanPooledEncoder(bert), best, decoder, fusion, config, vocab)
    return dict(saved["state"])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pathfusion.model_export.last_step",
                                     description=__doc__.splitlines()[0].split(": ", 1)[1])
    parser.add_argument("run", type=Path, help="a naming run's folder (train naming --run)")
    parser.add_argument("--out", type=Path, required=True, help="the folder to write (replaced)")
    args = parser.parse_args(argv)
    try:
        state = write_last_step(args.run, args.out)
    except FileNotFoundError as exc:
        print(f"last_step: error: {exc}", file=sys.stderr)
        return 1
    print(f"{args.run} at step {state['step']} → {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
