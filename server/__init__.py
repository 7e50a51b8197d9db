"""pathfusion's runtime: parsing, path contexts, models and the language server (no torch)."""
