"""Which generated names are made of words: the naming head's filter against made-up subtokens.

Why: the head writes a name wordpiece by wordpiece, so it can glue pieces into subtokens that
no one writes — ``routeer``, ``commandode``, ``unbanchaban`` — and the length bonus that
ranks names (:data:`pathfusion.server.name_generator.LENGTH_BONUS`) favours such long
candidates.  A suggested name is kept only if each of its subtokens is a *word*: one that the
names of enough training projects use (the lexicon the export ships,
:mod:`pathfusion.model_export.name_lexicon`), one that occurs in the function's own text (the
copy mechanism's source: a project's own vocabulary is always allowed), or a number.  On the
first 4,000 validation functions it changed the top suggestion of 3.3 % of them and moved F1
from 0.383 to 0.386 (the choice and its effect: docs/results.md, "Names made of words").

Nor may a word come back (``to_string_to_string``, ``is_jedi_import_jedi``; numbers may):
the decoder repeats itself when unsure, and the length bonus ranks such long names up, while
0.37 % of real names do it (train split).  On 1,400 validation functions dropping them
changed 13 top suggestions, F1 −0.001 and exact match +0.001 (docs/results.md).
"""

from __future__ import annotations

import gzip
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from .paths import METHOD_NAME, split_subtokens

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def own_subtokens(masked_source: str) -> frozenset[str]:
    """The subtokens of every identifier-like word of the function's text (code, strings,
    comments), its masked name left out: what the head could copy from."""
    words: set[str] = set()
    for identifier in set(_IDENTIFIER.findall(masked_source)):
        if identifier != METHOD_NAME:
            words.update(split_subtokens(identifier))
    return frozenset(words)


def repeats_a_word(parts: list[str]) -> bool:
    """Whether a subtoken other than a number occurs twice (``fk_4_to_fk_4`` does, by ``fk``)."""
    words = [part for part in parts if not part.isdigit()]
    return len(set(words)) < len(words)


@dataclass(frozen=True)
class NameWords:
    """The lexicon of subtokens that count as words in any function."""

    words: frozenset[str]

    @classmethod
    def load(cls, path: Path) -> NameWords:
        """One word a line, gzip (what the export writes); raises OSError or ValueError."""
        with gzip.open(path, "rt", encoding="utf-8") as fh:
            words = frozenset(line.strip() for line in fh if line.strip())
        if not words:
            raise ValueError(f"{path} holds no words")
        return cls(words)

    def admits(self, label: str, own: frozenset[str] = frozenset()) -> bool:
        """Whether every subtoken of ``label`` (``a|b``) is a word — in the lexicon, in ``own``
        (:func:`own_subtokens`), or a number — and no word comes back."""
        parts = label.split("|")
        return not repeats_a_word(parts) and self._all_words(parts, own)

    def _all_words(self, parts: list[str], own: frozenset[str]) -> bool:
        return all(part in self.words or part in own or part.isdigit() for part in parts)

    def kept(self, labels: Iterable[str], masked_source: str) -> list[str]:
        """The ``labels`` :meth:`admits` with the function's own subtokens, in order; those are
        read from ``masked_source`` only when a label needs them (most names are lexicon
        words, and a hover should not pay for the rest — nor for a name that repeats a word,
        which no text makes acceptable)."""
        own: frozenset[str] | None = None
        kept = []
        for label in labels:
            parts = label.split("|")
            if repeats_a_word(parts):
                continue
            if not self._all_words(parts, frozenset()):
                own = own_subtokens(masked_source) if own is None else own
                if not self._all_words(parts, own):
                    continue
            kept.append(label)
        return kept
