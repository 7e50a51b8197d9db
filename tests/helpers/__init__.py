"""What several test modules share: sample sources and tiny models (:mod:`.models`), the
training corpus (:mod:`.corpus`), the index's fake embedder and workspace (:mod:`.index`)
and the LSP client helpers (:mod:`.lsp`).  Fixtures live in the ``conftest.py`` files."""
