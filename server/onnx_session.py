"""The one place that builds onnxruntime sessions for the shipped graphs.

Why one factory: every graph should be loaded the same way — explicit thread counts (the
server shares two cores between hover, indexing and the editor), sequential execution
(the graphs are chains; parallel branches only add scheduling), quiet logging, and a
:class:`~pathfusion.server.models.ModelError` that says how to fix a bad file.

Compact weight storage (``model_export/compact_onnx.py``) keeps large matrices as int8 with
one scale per row, dequantised by ``DequantizeLinear`` nodes whose inputs are all constant.
onnxruntime leaves such nodes unfolded by default (it keeps Q/DQ pairs for its quantised
kernels), which would dequantise every matrix on *every* run — measured 4× slower for
code2vec.  ``session.disable_quant_qdq`` lets constant folding turn them back into fp32
initializers once, at load: the file stays 4× smaller and the run costs what fp32 costs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .models import ModelError

FOLD_WEIGHTS_KEY = "session.disable_quant_qdq"


def session_options(threads: int | None, *, fold_weights: bool = True) -> Any:
    """Options for one graph: ``threads`` intra-op threads (``None``: onnxruntime's default),
    one inter-op thread, sequential, warnings and errors only."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = max(1, int(threads))
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3
    if fold_weights:
        options.add_session_config_entry(FOLD_WEIGHTS_KEY, "1")
    return options


def create_session(path: Path, providers: list[str], threads: int | None, *, fix: str,
                   fold_weights: bool = True) -> Any:
    """An ``InferenceSession`` of ``path``; ``fix`` ends the error message (what to re-run)."""
    import onnxruntime as ort

    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path} not found; {fix}")
    try:
        return ort.InferenceSession(str(path), session_options(threads, fold_weights=fold_weights),
                                    providers=providers)
    except Exception as exc:  # onnxruntime raises its own exception types
        raise ModelError(f"{path}: onnxruntime cannot load it ({exc}); {fix}") from exc
