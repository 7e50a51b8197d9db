"""Memory stays bounded (docs/reliability.md): the caches a long-running server fills per
identifier, query word, string literal, docstring and hovered function are bounded in
entries *and* in what each entry keeps (the per-message bookkeeping of the protocol is checked in
``tests/lsp/test_lsp_reliability.py``; the RSS trend by ``benchmarks/soak.py``)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import numpy as np

from pathfusion.server import parsing, paths
from pathfusion.server.fusion import FusionPredictor


def test_identifier_and_string_caches_keep_short_keys_only() -> None:
    for cached in (paths._split_subtokens_cached, paths._identifier_token_cached, paths._string_token_cached):
        assert cached.cache_info().maxsize == paths.CACHE_ENTRIES <= 16_384
    long_name = "a_very_long_identifier_" * 8
    docstring = '"""' + "Explain it all. " * 50 + '"""'
    before = [c.cache_info().currsize for c in (paths._split_subtokens_cached, paths._string_token_cached)]
    assert paths.split_subtokens(long_name) == paths._split_subtokens(long_name)
    assert paths.identifier_token(long_name) == "|".join(paths._split_subtokens(long_name))
    assert paths._string_token(docstring, "f") == paths._string_token_uncached(docstring, "f")
    after = [c.cache_info().currsize for c in (paths._split_subtokens_cached, paths._string_token_cached)]
    assert after == before
    assert paths.split_subtokens("getHTTPResponse2") == ("get", "http", "response", "2")  # short: cached
    assert paths._string_token("'utf8'", "f") == "utf|8"


def test_docstring_cache_keeps_ordinary_docstrings_only() -> None:
    info = parsing._evaluate_docstring_cached.cache_info()
    assert info.maxsize == parsing.DOCSTRING_CACHE_ENTRIES
    huge = '"""' + "x" * (parsing.DOCSTRING_CACHED_LENGTH + 10) + '"""'
    assert parsing._evaluate_docstring(huge) == "x" * (parsing.DOCSTRING_CACHED_LENGTH + 10)
    assert parsing._evaluate_docstring_cached.cache_info().currsize == info.currsize


def test_fusion_embedding_cache_is_keyed_by_digests() -> None:
    """The cache kept every hovered function's whole masked text as its key."""
    embedded: list[str] = []

    def embed(texts: list[str]) -> Any:
        embedded.extend(texts)
        return np.ones((len(texts), 4), dtype=np.float32)

    runtime = SimpleNamespace(info={}, embedder=SimpleNamespace(embed=embed))
    predictor = FusionPredictor(runtime)  # type: ignore[arg-type]
    big = "def f():\n" + "    x = 1\n" * 10_000
    predictor._embeddings([big, "def g(): pass", big])
    predictor._embeddings([big])
    assert embedded == [big, "def g(): pass"]  # the second call found it cached
    assert all(isinstance(key, bytes) and len(key) == 16 for key in predictor._cache)
