"""The number the editor shows beside a suggested name: how likely it is the function's name.

Why not the model's own probability: names are *ranked* by log-probability plus a bonus per
subtoken (:data:`pathfusion.server.name_generator.LENGTH_BONUS`, worth +0.02 F1 on validation),
so the first name's model probability is often below the second's — a list reading "1.
``is_jedi_import_position`` 3 %, 2. ``is_jedi_import`` 7 %" contradicts itself, and "more
likely than the current name" meant something else than "ranked above it".

So the shown number is a softmax, at one temperature, over the scores names are ranked by and
a "none of these" logit — the model's left-over probability (what the beam's names do not
hold) plus a constant: monotone in the ranking, at most 1 over the names, still near 1 where
the model is sure of one name, and with slope 1 and no bonus exactly the model's own
probabilities.  Both parameters are fitted on validation by maximum likelihood of which name,
if any, is the real one (``python -m pathfusion.model_export.naming_policy``, docs/results.md).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

LEFTOVER_FLOOR = 1e-6
"""The left-over probability is read at least this large (the beam's names can hold it all)."""


@dataclass(frozen=True)
class Calibration:
    """``confidence_i = exp(slope·s_i) / (exp(none_logit + slope·log r) + Σ_j exp(slope·s_j))``
    over the rank scores ``s`` of one function's names, ``r`` the model's probability left
    to names outside them."""

    slope: float
    none_logit: float

    def confidences(self, scores: Sequence[float], leftover: float) -> list[float]:
        """The calibrated probability of each name whose rank score is in ``scores``."""
        if not scores:
            return []
        logits = [self.slope * s for s in scores]
        total = self._total(logits, leftover)
        return [math.exp(z - total) for z in logits]

    def of_another(self, score: float, scores: Sequence[float], leftover: float) -> float:
        """The same number for a name scored beside the beam's (the current name, which the
        beam need not have found), on the scale of :meth:`confidences` of ``scores``."""
        return math.exp(self.slope * score - self._total([self.slope * s for s in scores], leftover))

    def _total(self, logits: list[float], leftover: float) -> float:
        """log of the softmax's denominator."""
        none = self.none_logit + self.slope * math.log(max(leftover, LEFTOVER_FLOOR))
        top = max([none, *logits])
        return top + math.log(math.exp(none - top) + sum(math.exp(z - top) for z in logits))


def leftover(probabilities: Sequence[float]) -> float:
    """The model's probability of every name but these (at least :data:`LEFTOVER_FLOOR`)."""
    return max(1.0 - sum(probabilities), LEFTOVER_FLOOR)
