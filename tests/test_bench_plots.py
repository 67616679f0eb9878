"""benchmarks/plots.py: the committed results render as well-formed SVG charts."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ElementTree
from pathlib import Path

from benchmarks import plots

SVG = "{http://www.w3.org/2000/svg}"


def test_every_chart_renders_from_the_committed_results(tmp_path: Path) -> None:
    assert plots.main(["--out", str(tmp_path)]) == 0
    names = sorted(path.name for path in tmp_path.iterdir())
    assert "recovery.svg" in names and "backends-throughput.svg" in names
    for path in tmp_path.iterdir():
        root = ElementTree.fromstring(path.read_text())
        assert root.tag == f"{SVG}svg"
        assert len(root.findall(f"{SVG}rect")) > 2  # background and bars


def test_bars_scale_to_the_largest_value_and_say_it() -> None:
    chart = plots.Chart("t", "ms", [("g", [plots.Bar("a", 50.0, plots.OURS),
                                           plots.Bar("b", 200.0, plots.ANCHOR)])],
                        target=100.0)
    root = ElementTree.fromstring(plots.render(chart))
    widths = [float(rect.get("width", 0)) for rect in root.findall(f"{SVG}rect")[1:]]
    assert widths[1] == 4 * widths[0]
    texts = [text.text or "" for text in root.iter(f"{SVG}text")]
    assert "50.0 ms" in texts and "200 ms" in texts and "target 100 ms" in texts


def test_missing_or_foreign_files_are_left_out(tmp_path: Path) -> None:
    (tmp_path / "redis.json").write_text(json.dumps({"date": "x", "scenarios": {
        "cluster": {"throughput": {"median": 10.0}}, "odd": {"throughput": "?"}}}))
    (tmp_path / "nats.json").write_text("not json")
    charts = dict(plots.backend_charts(tmp_path))
    groups = charts["backends-throughput"].groups
    assert [name for name, _ in groups] == ["redis"]
    assert [bar.label for bar in groups[0][1]] == ["ours, ordered"]
    assert plots.main(["--results", str(tmp_path / "none"), "--out", str(tmp_path)]) == 1


def test_the_node_charts_come_from_the_newest_run_with_node_s_rows(tmp_path: Path) -> None:
    def run(date: str, node: bool) -> str:
        scenarios = {"cluster": {"throughput": {"median": 1.0}}}
        if node:
            scenarios["node"] = {"throughput": {"median": 2.0}}
        return json.dumps({"date": date, "clients": {"js": {"scenarios": scenarios}}})

    (tmp_path / "redis-node.json").write_text(run("2026-12-04T14:42", True))
    (tmp_path / "redis.json").write_text(run("2026-12-05T18:06", True))
    assert (plots.node_run(tmp_path) or {})["date"] == "2026-12-05T18:06"
    (tmp_path / "redis.json").write_text(run("2026-12-06T00:00", False))  # no Node rows
    assert (plots.node_run(tmp_path) or {})["date"] == "2026-12-04T14:42"
    title = dict(plots.node_charts(tmp_path))["redis-node-throughput"].subtitle
    assert "2026-12-04T14:42" in title
