"""The number the editor shows beside a suggested name: how likely it is the function's name.

Why not the model's own probability: names are *ranked* by log-probability plus a bonus per
subtoken (:data:`pathfusion.server.name_generator.LENGTH_BONUS`, worth +0.02 F1 on validation),
so the first name's model probability is often below the second's — a list reading "1.
``is_jedi_import_position`` 3 %, 2. ``is_jedi_import`` 7 %" contradicts itself, and "more
likely than the current name" meant something else than "ranked above it".

So the shown number is a softmax, over the beam's names, of ``slope`` × the score names are
ranked by, beside a "none of these" logit (the real name is outside the beam most of the
time): monotone in the ranking, at most 1 over the names, and calibrated — both parameters
fitted on validation by maximum likelihood of which name, if any, is the real one
(``python -m pathfusion.model_export.naming_policy``, docs/results.md).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Calibration:
    """``confidence_i = exp(slope·s_i) / (exp(none_logit) + Σ_j exp(slope·s_j))`` over the
    rank scores ``s`` of one function's names."""

    slope: float
    none_logit: float

    def confidences(self, scores: Sequence[float]) -> list[float]:
        """The calibrated probability of each name whose rank score is in ``scores``."""
        if not scores:
            return []
        logits = [self.slope * s for s in scores]
        top = max(self.none_logit, *logits)
        total = math.exp(self.none_logit - top) + sum(math.exp(z - top) for z in logits)
        return [math.exp(z - top) / total for z in logits]

    def of_another(self, score: float, scores: Sequence[float]) -> float:
        """The same number for a name scored beside the beam's (the current name, which the
        beam need not have found), on the scale of :meth:`confidences` of ``scores``; the
        current name, when the beam found it too, gets the number the list shows for it."""
        logits = [self.slope * s for s in scores]
        z = self.slope * score
        top = max(self.none_logit, z, *logits)
        total = math.exp(self.none_logit - top) + sum(math.exp(v - top) for v in logits)
        return math.exp(z - top) / total
