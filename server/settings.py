"""The server's settings (docs/design.md §8): ``pathfusion.*`` as sent by editors.

Why bad values never raise: settings arrive from an editor's JSON, typed by hand; a typo must
not stop the language server.  :meth:`Settings.from_dict` keeps the default (or the previous
value, see ``base``) for every value it cannot use and explains each one in
:attr:`Settings.warnings`, which the server shows once to the user.

Accepted shapes (all may be mixed; the later, more specific form wins)::

    {"topK": 3}                        # the section itself (workspace/configuration)
    {"pathfusion": {"topK": 3}}        # nested under the section name
    {"pathfusion.topK": 3}             # flat, dotted (VS Code settings.json)
    {"top_k": 3}                       # snake_case, as in this dataclass

Unknown keys produce a warning and are ignored.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

SECTION = "pathfusion"
DEVICES = ("auto", "cpu", "cuda")
LLM_BACKENDS = ("onnx", "transformers")
FUSION_VARIANTS = ("default", "code2vec", "llm", "concat", "weighted", "attention")
"""``default`` = the manifest's default variant (the best on validation)."""
MAX_TOP_K = 50


@dataclass(frozen=True)
class Settings:
    """Validated settings; build them with :meth:`from_dict`."""

    models_dir: str | None = None
    """Models folder; None = ``$PATHFUSION_MODELS`` or the repository's ``models/``."""
    llm_backend: str = "onnx"
    llm_model_path: str | None = None
    fusion_variant: str = "default"
    device: str = "auto"
    top_k: int = 5
    exclude: tuple[str, ...] = ()
    """Glob patterns of workspace files to leave out of the index."""
    max_file_size: int = 1_000_000
    """Bytes; larger files are neither indexed nor analysed."""
    follow_external_symlinks: bool = False
    """Index what symlinks in a workspace folder lead to outside it (off: a link to ``/``
    would make the indexer walk the whole file system)."""
    hover_min_confidence: float = 0.5
    """Hover says nothing when the current name is the top suggestion with at least this
    probability."""
    warnings: tuple[str, ...] = field(default=(), compare=False, repr=False)
    """What :meth:`from_dict` could not use, one sentence each."""

    def to_dict(self) -> dict[str, Any]:
        """camelCase JSON (as an editor would send it), without the warnings."""
        data = asdict(self)
        data.pop("warnings")
        data["exclude"] = list(self.exclude)
        return {_camel(key): value for key, value in data.items()}

    @classmethod
    def from_dict(cls, data: Any, base: Settings | None = None) -> Settings:
        """Settings from an editor's JSON (see the module docstring); values missing from
        ``data`` keep those of ``base`` (default: the defaults).  Never raises."""
        base = replace(base, warnings=()) if base is not None else cls()
        warnings: list[str] = []
        if data is None:
            return base
        if not isinstance(data, Mapping):
            return replace(base, warnings=(
                f"{SECTION} settings must be an object, got {type(data).__name__}; using defaults",))
        raw = _flatten(data, warnings)
        values: dict[str, Any] = {}
        for key, value in raw.items():
            name = _FIELD_BY_KEY.get(_normal_key(key))
            if name is None:
                warnings.append(f"unknown setting {SECTION}.{key} ignored")
                continue
            try:
                values[name] = _VALIDATORS[name](value)
            except ValueError as exc:
                default = getattr(base, name)
                shown = list(default) if isinstance(default, tuple) else default
                warnings.append(f"{SECTION}.{_camel(name)}: {exc}; using {shown!r}")
        return replace(base, **values, warnings=tuple(warnings))


# -- keys ---------------------------------------------------------------------------------
def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.capitalize() for part in rest)


def _normal_key(key: str) -> str:
    """``topK``, ``top_k``, ``top-k`` → ``topk``."""
    return re.sub(r"[_\-]", "", key).lower()


def _flatten(data: Mapping[Any, Any], warnings: list[str]) -> dict[str, Any]:
    """The section's keys from the accepted shapes, in increasing priority."""
    flat: dict[str, Any] = {}
    nested: dict[str, Any] = {}
    dotted: dict[str, Any] = {}
    for key, value in data.items():
        if not isinstance(key, str):
            warnings.append(f"setting key {key!r} is not a string; ignored")
        elif key == SECTION:
            if isinstance(value, Mapping):
                nested.update({str(k): v for k, v in value.items()})
            elif value is not None:
                warnings.append(f"{SECTION} must be an object, got {type(value).__name__}; ignored")
        elif key.startswith(SECTION + "."):
            dotted[key[len(SECTION) + 1 :]] = value
        else:
            flat[key] = value
    return {**flat, **nested, **dotted}


# -- validators (raise ValueError with the reason) -----------------------------------------
def _optional_path(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError(f"expected a path (string) or null, got {type(value).__name__}")
    value = value.strip()
    return value or None


def _choice(choices: tuple[str, ...]) -> Any:
    def check(value: Any) -> str:
        if not isinstance(value, str) or value.strip().lower() not in choices:
            raise ValueError(f"expected one of {', '.join(choices)}, got {value!r}")
        return value.strip().lower()

    return check


def _integer(low: int, high: int) -> Any:
    def check(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"expected an integer, got {value!r}")
        if isinstance(value, float):
            if not value.is_integer():
                raise ValueError(f"expected an integer, got {value!r}")
            value = int(value)
        if not low <= value <= high:
            raise ValueError(f"expected an integer between {low} and {high}, got {value}")
        return value

    return check


def _probability(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"expected a number between 0 and 1, got {value!r}")
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"expected a number between 0 and 1, got {value}")
    return float(value)


def _boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"expected true or false, got {value!r}")
    return value


def _globs(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"expected a list of glob patterns (strings), got {value!r}")
    return tuple(v for v in value if v.strip())


_VALIDATORS: dict[str, Any] = {
    "models_dir": _optional_path,
    "llm_backend": _choice(LLM_BACKENDS),
    "llm_model_path": _optional_path,
    "fusion_variant": _choice(FUSION_VARIANTS),
    "device": _choice(DEVICES),
    "top_k": _integer(1, MAX_TOP_K),
    "exclude": _globs,
    "max_file_size": _integer(1, 1 << 40),
    "follow_external_symlinks": _boolean,
    "hover_min_confidence": _probability,
}
_FIELD_BY_KEY = {_normal_key(f.name): f.name for f in fields(Settings) if f.name != "warnings"}
_FIELD_BY_KEY.update({"models": "models_dir", "topk": "top_k"})
assert set(_VALIDATORS) == set(_FIELD_BY_KEY.values())
