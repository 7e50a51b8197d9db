"""``python -m pathfusion.model_export.reliability_plot``: the reliability diagram of the name
probability the editor shows.

Reads ``naming_policy`` results (``--result LABEL=FILE``, several) and draws, for each, the
top suggestion's mean shown probability against how often it is the real name, bin by bin
(the 10 equal-width bins of its expected calibration error), a circle's area proportional to
the functions in the bin, the diagonal of a perfectly calibrated number, and each set's ECE in
the legend.  A result with a ``holdout`` (the functions left out of the calibration's fit) is
read there; a ``--projects`` result (held-out code) as it is.

Why a picture beside the tables of ``docs/results.md``: ECE is one number, and the same ECE
comes from a number that is too sure at the top and one that is too shy everywhere — which way
it errs, and where most names fall (low probabilities), is what a user reading the hover needs.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

DEFAULT_OUT = Path("docs/naming-reliability.svg")
COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e")
SIZE, MARGIN = 420, 56
"""The square plot's side and the margin for the axes' labels, in SVG pixels."""


def reliability_of(result: dict[str, Any]) -> dict[str, Any]:
    """The ``top1_shown`` block of a ``naming_policy`` result (its holdout's where it has one)."""
    block = result.get("holdout", result).get("top1_shown")
    if not block or not block.get("reliability"):
        raise ValueError("no top1_shown reliability bins (not a naming_policy result?)")
    return dict(block)


def parse_result(spec: str) -> tuple[str, Path]:
    """``LABEL=FILE``."""
    label, sep, path = spec.partition("=")
    if not sep or not label or not path:
        raise ValueError(f"{spec!r}: expected LABEL=FILE")
    return label, Path(path)


def plot(results: Sequence[tuple[str, dict[str, Any]]], title: str) -> str:
    """The diagram of ``results`` (label, reliability block) as an SVG document.  Why SVG written
    here: a few kilobytes of text that renders wherever the docs are read, and no plotting
    library among the project's dependencies."""
    width, height = SIZE + 2 * MARGIN, SIZE + 2 * MARGIN + 18 * (len(results) + 1)

    def at(x: float, y: float) -> tuple[float, float]:
        return MARGIN + x * SIZE, MARGIN + (1 - y) * SIZE

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'font-family="sans-serif" font-size="11">',
             f'<rect width="{width}" height="{height}" fill="white"/>',
             f'<text x="{width / 2}" y="{MARGIN / 2}" text-anchor="middle" font-size="12">{escape(title)}</text>']
    for tick in range(11):
        v = tick / 10
        x, y = at(v, v)
        parts.append(f'<line x1="{x}" y1="{MARGIN}" x2="{x}" y2="{MARGIN + SIZE}" stroke="#eee"/>')
        parts.append(f'<line x1="{MARGIN}" y1="{y}" x2="{MARGIN + SIZE}" y2="{y}" stroke="#eee"/>')
        parts.append(f'<text x="{x}" y="{MARGIN + SIZE + 14}" text-anchor="middle">{v:.1f}</text>')
        parts.append(f'<text x="{MARGIN - 6}" y="{y + 4}" text-anchor="end">{v:.1f}</text>')
    parts.append(f'<rect x="{MARGIN}" y="{MARGIN}" width="{SIZE}" height="{SIZE}" fill="none" stroke="#333"/>')
    (x0, y0), (x1, y1) = at(0, 0), at(1, 1)
    parts.append(f'<line x1="{x0}" y1="{y0}" x2="{x1}" y2="{y1}" stroke="#999" stroke-dasharray="5,4"/>')
    parts.append(f'<text x="{MARGIN + SIZE / 2}" y="{MARGIN + SIZE + 32}" text-anchor="middle">'
                 'probability shown for the top name (mean of its bin)</text>')
    parts.append(f'<text transform="translate({MARGIN - 36},{MARGIN + SIZE / 2}) rotate(-90)" text-anchor="middle">'
                 'share of top names that are the real name</text>')
    for n, (label, block) in enumerate(results):
        colour = COLOURS[n % len(COLOURS)]
        bins = [b for b in block["reliability"] if b["count"]]
        total = sum(b["count"] for b in bins)
        points = [at(b["confidence"], b["accuracy"]) for b in bins]
        parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="1.5" points="'
                     + " ".join(f"{x:.1f},{y:.1f}" for x, y in points) + '"/>')
        for (x, y), b in zip(points, bins, strict=True):
            radius = max(2.0, 16.0 * (b["count"] / total) ** 0.5)
            parts.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="{radius:.1f}" fill="{colour}" fill-opacity="0.45">'
                         f'<title>{b["count"]} functions: shown {b["confidence"]:.3f}, right {b["accuracy"]:.3f}</title></circle>')
        y = MARGIN + SIZE + 52 + 18 * n
        parts.append(f'<circle cx="{MARGIN + 6}" cy="{y - 4}" r="5" fill="{colour}" fill-opacity="0.6"/>')
        parts.append(f'<text x="{MARGIN + 16}" y="{y}">{escape(label)}: ECE {block["ece"]:.3f} ({total} functions)</text>')
    parts.append(f'<text x="{MARGIN}" y="{MARGIN + SIZE + 52 + 18 * len(results)}" fill="#555">a circle\'s area: its '
                 "bin's share of the functions; dashed: a perfectly calibrated number</text>")
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pathfusion.model_export.reliability_plot",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--result", action="append", required=True, metavar="LABEL=FILE",
                        help="a naming_policy result (its --out) and the label to draw it under")
    parser.add_argument("--title", default="Name suggestions: the shown probability against the real name")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    try:
        results = []
        for spec in args.result:
            label, path = parse_result(spec)
            try:
                results.append((label, reliability_of(json.loads(path.read_text(encoding="utf-8")))))
            except (OSError, ValueError, AttributeError) as error:  # unreadable, not JSON, not a result
                raise ValueError(f"{path}: {error}") from None
    except ValueError as error:
        print(f"reliability_plot: {error}", file=sys.stderr)
        return 2
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(plot(results, args.title), encoding="utf-8")
    eces = ", ".join(f"{label} ECE {block['ece']}" for label, block in results)
    print(f"wrote {args.out} ({eces})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
