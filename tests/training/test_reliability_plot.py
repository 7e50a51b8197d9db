"""The reliability diagram of the shown name probability (model_export/reliability_plot.py):
one line per result through its non-empty bins, placed by confidence and accuracy, ECE in the
legend; what is not a naming_policy result is refused."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

from pathfusion.model_export import reliability_plot

SVG = "{http://www.w3.org/2000/svg}"


def _result(ece: float, bins: list[tuple[float, float, int]], holdout: bool) -> dict[str, object]:
    block = {"ece": ece, "reliability": [{"from": i / 10, "to": (i + 1) / 10, "confidence": c, "accuracy": a, "count": n}
                                         for i, (c, a, n) in enumerate(bins)]}
    return {"top1_shown": {"ece": 0.9, "reliability": []}, "holdout": {"top1_shown": block}} if holdout \
        else {"top1_shown": block}


def test_the_diagram_draws_each_result_through_its_bins(tmp_path: Path) -> None:
    valid = tmp_path / "valid.json"
    valid.write_text(json.dumps(_result(0.035, [(0.05, 0.05, 300), (0.15, 0.2, 100), (0.25, 0.0, 0)], holdout=True)))
    held = tmp_path / "held.json"
    held.write_text(json.dumps(_result(0.014, [(0.04, 0.04, 700), (0.5, 1.0, 1)], holdout=False)))
    out = tmp_path / "plot.svg"
    assert reliability_plot.main(["--result", f"validation={valid}", "--result", f"held <out>={held}",
                                  "--out", str(out)]) == 0
    root = ET.fromstring(out.read_text())
    lines = root.findall(f"{SVG}polyline")
    assert len(lines) == 2
    first = [tuple(map(float, p.split(","))) for p in lines[0].get("points", "").split()]
    assert len(first) == 2  # the empty bin is not drawn
    m, size = reliability_plot.MARGIN, reliability_plot.SIZE
    assert first[0] == (round(m + 0.05 * size, 1), round(m + 0.95 * size, 1))
    second = [tuple(map(float, p.split(","))) for p in lines[1].get("points", "").split()]
    assert second[1] == (m + 0.5 * size, float(m))  # accuracy 1.0 at the top
    texts = " ".join(t.text or "" for t in root.iter(f"{SVG}text"))
    assert "validation: ECE 0.035 (400 functions)" in texts  # the holdout's block, not the fit's
    assert "held <out>: ECE 0.014 (701 functions)" in texts  # escaped in the file, read back as text


def test_what_is_not_a_naming_policy_result_is_refused(tmp_path: Path) -> None:
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"mrr": 0.8}))
    out = tmp_path / "plot.svg"
    assert reliability_plot.main(["--result", f"x={other}", "--out", str(out)]) == 2
    assert reliability_plot.main(["--result", str(other), "--out", str(out)]) == 2  # no LABEL=
    assert reliability_plot.main(["--result", f"x={tmp_path / 'missing.json'}", "--out", str(out)]) == 2
    assert not out.exists()
