"""Tiny models for the tests: a random code2vec run over :data:`SAMPLE`, and the int8-only
MiniLM models folder made from a full export (the session fixtures of tests/conftest.py
build them once)."""

from __future__ import annotations

import copy
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SAMPLE = '''
import json


def load_config(path):
    with open(path) as fh:
        return json.loads(fh.read())


class Store:
    def __init__(self):
        self.items = {}

    def get_item(self, key, default=None):
        if key in self.items:
            return self.items[key]
        return default

    @property
    def size(self):
        return len(self.items)


def empty():
    pass
'''


@dataclass(frozen=True)
class TinyCode2Vec:
    """A tiny code2vec run folder, its export and the manifest :func:`export` returned."""

    run: Path
    models: Path
    manifest: dict[str, Any]


@dataclass(frozen=True)
class EmbedderExport:
    """A models folder holding the MiniLM embedder, and its manifest entry."""

    models: Path
    entry: dict[str, Any]


def make_run(folder: Path, *, seed: int = 0, final: bool = True) -> Path:
    """A tiny random code2vec run folder: real tokens/paths of :data:`SAMPLE` plus filler."""
    import torch

    from pathfusion.model_export.c2v_data import PAD, UNK, Vocab, Vocabs
    from pathfusion.model_export.code2vec import Code2Vec, Code2VecConfig
    from pathfusion.server.parsing import Document
    from pathfusion.server.paths import context_space

    torch.manual_seed(seed)
    doc = Document(SAMPLE)
    tokens: set[str] = set()
    paths: set[str] = set()
    for func in doc.functions():
        for context in context_space(func.node, doc.source, func.name).contexts():
            tokens.update((context.start, context.end))
            paths.add(context.path)
    labels = ["load|config", "get|item", "get", "size", "read|file", "empty", "run", "main"]
    vocabs = Vocabs(
        Vocab([PAD, UNK, *sorted(tokens), *(f"tok{i}" for i in range(200))]),
        Vocab([PAD, UNK, *sorted(paths), *(f"path{i}" for i in range(200))]),
        Vocab([PAD, UNK, *labels, *(f"name|{i}" for i in range(150))]),
    )
    config = Code2VecConfig(token_vocab=len(vocabs.tokens), path_vocab=len(vocabs.paths),
                            target_vocab=len(vocabs.targets), epochs=1)
    model = Code2Vec(len(vocabs.tokens), len(vocabs.paths), len(vocabs.targets), config)
    folder.mkdir(parents=True, exist_ok=True)
    vocabs.save(folder / "vocab")
    (folder / "config.json").write_text(json.dumps(config.to_dict()))
    torch.save(model.state_dict(), folder / "best.pt")
    if final:
        (folder / "final.json").write_text(json.dumps(
            {"event": "final", "test": {"f1": 0.25, "precision": 0.3, "recall": 0.2},
             "valid": {"f1": 0.3}}))
    return folder


def int8_only(full: EmbedderExport, target: Path) -> EmbedderExport:
    """The models folder that ``export_minilm(target, quantize=True, keep_fp32=False)`` writes
    (the shipped layout), made from a full fp32 + int8 export instead of exporting again:
    the same int8 graph and tokenizer, no fp32 graph, and a config and manifest entry that
    name none."""
    from pathfusion.model_export.export_embedder import write_manifest_entry
    from pathfusion.server.models import sha256_file

    entry = copy.deepcopy(full.entry)
    fp32 = entry["onnx_fp32"]
    assert fp32 is not None and entry["onnx_int8"] is not None, "expected an fp32 + int8 export"
    for name in entry["files"]:
        if name != fp32:
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(full.models / name, target / name)
    config_path = target / entry["config"]
    config = json.loads(config_path.read_text(encoding="utf-8"))
    config["files"]["fp32"] = None
    config_path.write_text(json.dumps(config, indent=1) + "\n", encoding="utf-8")
    del entry["files"][fp32], entry["sizes"][fp32]
    entry["onnx_fp32"] = None
    entry["files"][entry["config"]] = sha256_file(config_path)
    entry["sizes"][entry["config"]] = config_path.stat().st_size
    write_manifest_entry(target, entry)
    return EmbedderExport(target, entry)


def file_stamps(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``folder`` with its size and mtime: what a read-only folder keeps."""
    return {path.relative_to(folder).as_posix(): (path.stat().st_size, path.stat().st_mtime_ns)
            for path in sorted(folder.rglob("*")) if path.is_file()}


def write_tiny_bert(folder: Path, dropout: float = 0.1) -> Path:
    """A 2-layer, 32-wide BERT with MiniLM's tokenizer (random weights, seeded) in ``folder``:
    a base that trains in seconds for the fine-tuning tests (``dropout`` 0: deterministic steps)."""
    import shutil

    import torch
    from transformers import BertConfig, BertModel

    from pathfusion.model_export.export_embedder import packaged_model_dir

    source = packaged_model_dir()
    torch.manual_seed(0)
    config = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=512, hidden_dropout_prob=dropout,
                        attention_probs_dropout_prob=dropout)
    BertModel(config, add_pooling_layer=False).save_pretrained(str(folder), safe_serialization=True)
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        if (source / name).is_file():
            shutil.copy2(source / name, folder / name)
    return folder

