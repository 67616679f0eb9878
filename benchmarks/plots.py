"""Plots of the committed benchmark results, as SVG files (no plotting library).

    python -m benchmarks.plots [--results benchmarks/results] [--out benchmarks/plots]

Reads the JSON files the benchmarks write (``bench_cross_node``: ``<backend>.json``
and ``redis-node.json``, the newer of ``redis.json`` and that one for the charts
against Node's adapter; ``bench_recovery``: ``recovery-<backend>.json``) and writes
one horizontal bar chart per figure: throughput and latency per backend against the
anchors (one python-socketio node, python-socketio's own manager, Node's socket.io
with its Redis adapter, the raw broker client), per client, and recovery time per
backend. benchmarks/README.md shows them; run this after a benchmark run to
regenerate them. A file that is missing or from an older layout is left out, and the
figure says which run each bar comes from (the file's date).
"""

from __future__ import annotations

import argparse
import html
import json
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .environment import REPO_ROOT

__all__ = ["Bar", "Chart", "main", "render"]

RESULTS = REPO_ROOT / "benchmarks" / "results"
OUT = REPO_ROOT / "benchmarks" / "plots"
BACKENDS = ("local", "redis", "rabbitmq", "nats", "kafka", "postgres")
RECOVERY_BACKENDS = ("memory", *BACKENDS)
ANCHOR = "#9aa5b1"
OURS = "#2f6fdb"
NODE = "#3c9d5d"
LIMIT = "#d1495b"

SCENARIO_LABELS = {
    "single": ("one python-socketio node", ANCHOR),
    "pysio": ("python-socketio's manager", ANCHOR),
    "cluster": ("ours, ordered", OURS),
    "cluster-ff": ("ours, fire-and-forget", OURS),
    "cluster-concurrent": ("ours, ordered, 100 emitters", OURS),
    "recovery": ("ours, recovery on", OURS),
    "cluster-rooms": ("ours, ordered, subscriptions=rooms", OURS),
    "node": ("Node socket.io + redis-adapter", NODE),
    "node-sharded": ("Node socket.io + sharded redis-adapter", NODE),
    "node-single": ("one Node socket.io node", NODE),
}
"""Scenario -> (label, colour); raw client scenarios (``raw_*``) are the broker's
limit."""


@dataclass(frozen=True)
class Bar:
    label: str
    value: float
    colour: str
    note: str = ""
    """Printed after the value (e.g. min-max)."""


@dataclass(frozen=True)
class Chart:
    title: str
    unit: str
    groups: list[tuple[str, list[Bar]]]
    """(group heading, its bars), top to bottom."""
    subtitle: str = ""
    target: float | None = None
    """A vertical line (e.g. 100 ms)."""


def render(chart: Chart) -> str:
    """The chart as an SVG document."""
    label_w, bar_w, row_h, head_h = 250, 420, 20, 22
    rows = sum(len(bars) for _, bars in chart.groups)
    height = 56 + rows * row_h + len(chart.groups) * head_h + 16
    top = max([bar.value for _, bars in chart.groups for bar in bars]
              + [chart.target or 0.0, 1e-9])
    scale = bar_w / top
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{label_w + bar_w + 260}" '
           f'height="{height}" font-family="sans-serif" font-size="12">',
           '<rect width="100%" height="100%" fill="white"/>',
           f'<text x="8" y="20" font-size="15" font-weight="bold">'
           f'{html.escape(chart.title)}</text>',
           f'<text x="8" y="38" fill="#555">{html.escape(chart.subtitle)}</text>']
    y = 52
    for heading, bars in chart.groups:
        out.append(f'<text x="8" y="{y + 15}" font-weight="bold">'
                   f'{html.escape(heading)}</text>')
        y += head_h
        for bar in bars:
            width = max(bar.value * scale, 1.0)
            out.append(f'<text x="{label_w - 6}" y="{y + 14}" text-anchor="end">'
                       f'{html.escape(bar.label)}</text>')
            out.append(f'<rect x="{label_w}" y="{y + 3}" width="{width:.1f}" '
                       f'height="{row_h - 6}" fill="{bar.colour}"/>')
            text = f"{_number(bar.value)} {chart.unit}" + (f"  {bar.note}" if bar.note
                                                           else "")
            out.append(f'<text x="{label_w + width + 5:.1f}" y="{y + 14}">'
                       f'{html.escape(text)}</text>')
            y += row_h
    if chart.target is not None:
        x = label_w + chart.target * scale
        out.append(f'<line x1="{x:.1f}" y1="48" x2="{x:.1f}" y2="{y}" stroke="{LIMIT}" '
                   f'stroke-dasharray="4 3"/>')
        out.append(f'<text x="{x + 3:.1f}" y="{y + 12}" fill="{LIMIT}">target '
                   f'{_number(chart.target)} {chart.unit}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def _number(value: float) -> str:
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def _load(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _scenario_bar(name: str, result: dict[str, Any], metric: str) -> Bar | None:
    label, colour = SCENARIO_LABELS.get(name, (name.replace("_", " "), LIMIT))
    if name.startswith("raw"):
        label = f"raw client, {name.removeprefix('raw_').replace('_', ' ')}"
    if metric == "throughput":
        throughput = result.get("throughput")
        if not isinstance(throughput, dict) or "median" not in throughput:
            return None
        note = (f"({_number(throughput['min'])}-{_number(throughput['max'])})"
                if "min" in throughput and "max" in throughput else "")
        return Bar(label, float(throughput["median"]), colour, note)
    latency = result.get("latency")
    if not isinstance(latency, dict) or "p50_ms" not in latency:
        return None
    return Bar(label, float(latency["p50_ms"]), colour,
               f"p99 {_number(float(latency['p99_ms']))} ms")


def _sections(data: dict[str, Any]) -> Iterable[tuple[str, dict[str, Any]]]:
    clients = data.get("clients")
    if isinstance(clients, dict) and clients:
        for name, section in clients.items():
            yield name, section.get("scenarios", {})
    else:
        yield "python", data.get("scenarios", {})


CLIENT_HEADINGS = {"python": "python-socketio client",
                   "js": "official JavaScript client (as shipped: offers compression)",
                   "js/ws-off": "official JavaScript client, compression off",
                   "js/ws-on": "official JavaScript client, compression forced on"}


def _has_node_rows(data: dict[str, Any]) -> bool:
    return any("node" in scenarios for _, scenarios in _sections(data))


def node_run(results: Path) -> dict[str, Any] | None:
    """The newest Redis run with Node's rows: ``redis.json`` (the latest cross-node
    run) or ``redis-node.json`` (the run that compared websocket compression)."""
    runs = [data for name in ("redis.json", "redis-node.json")
            if (data := _load(results / name)) is not None and _has_node_rows(data)]
    return max(runs, key=lambda data: str(data.get("date", "")), default=None)


def node_charts(results: Path) -> list[tuple[str, Chart]]:
    """Redis against Node's socket.io with its Redis adapter, per client, from the
    newest run that has Node's rows."""
    data = node_run(results)
    if data is None:
        return []
    charts = []
    for metric, unit in (("throughput", "events/s"), ("latency", "ms p50")):
        groups = []
        for section, scenarios in _sections(data):
            bars = [bar for name, result in scenarios.items()
                    if (bar := _scenario_bar(name, result, metric)) is not None]
            if bars:
                groups.append((CLIENT_HEADINGS.get(section, section), bars))
        if groups:
            what = ("cross-node events/s to one client" if metric == "throughput"
                    else "cross-node latency, p50 (p99 after)")
            charts.append((f"redis-node-{metric}", Chart(
                f"Redis: {what}, against Node's redis-adapter", unit, groups,
                f"bench_cross_node --client ... ; run of {data.get('date', '?')[:16]}")))
    return charts


def backend_charts(results: Path) -> list[tuple[str, Chart]]:
    """Every backend: throughput and latency against its anchors."""
    charts = []
    for metric, unit in (("throughput", "events/s"), ("latency", "ms p50")):
        groups = []
        dates = set()
        for backend in BACKENDS:
            data = _load(results / f"{backend}.json")
            if data is None:
                continue
            dates.add(str(data.get("date", "?"))[:10])
            scenarios = data.get("scenarios", {})
            bars = [bar for name, result in scenarios.items()
                    if (bar := _scenario_bar(name, result, metric)) is not None]
            if bars:
                groups.append((backend, bars))
        if groups:
            charts.append((f"backends-{metric}", Chart(
                f"Every backend: cross-node {metric}, python-socketio client", unit,
                groups, f"bench_cross_node --backend all; runs of {', '.join(sorted(dates))}")))
    return charts


def recovery_chart(results: Path) -> list[tuple[str, Chart]]:
    """Recovery of the missed events per backend and client (median)."""
    groups = []
    dates = set()
    for backend in RECOVERY_BACKENDS:
        data = _load(results / f"recovery-{backend}.json")
        if data is None:
            continue
        dates.add(str(data.get("date", "?"))[:10])
        clients = data.get("clients") or {"python": data.get("transports", {})}
        bars = []
        for client, transports in clients.items():
            for transport, result in (transports or {}).items():
                summary = result.get("recover_ms") if isinstance(result, dict) else None
                if isinstance(summary, dict) and "median" in summary:
                    bars.append(Bar(f"{client}, {transport}", float(summary["median"]),
                                    OURS, f"({_number(summary['min'])}-"
                                          f"{_number(summary['max'])})"))
        if bars:
            groups.append((backend, bars))
    if not groups:
        return []
    return [("recovery", Chart("Recovery of 1,000 missed events (median)", "ms", groups,
                               f"bench_recovery; runs of {', '.join(sorted(dates))}",
                               target=100.0))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.plots",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    charts = [*node_charts(args.results), *backend_charts(args.results),
              *recovery_chart(args.results)]
    if not charts:
        print(f"plots: no results in {args.results}", file=sys.stderr)
        return 1
    args.out.mkdir(parents=True, exist_ok=True)
    for name, chart in charts:
        path = args.out / f"{name}.svg"
        path.write_text(render(chart))
        print(f"plots: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
