"""mnt-bench's report: the rows as JSON and as markdown tables (the streaming rows in one
of their own), with the machine, the physical limits each row is read against, and the
summary figures (K scaling, the share of a frame outside the networks, landmarks against
mediapipe, throughput of N streams against one)."""

from __future__ import annotations

import statistics
from collections.abc import Mapping
from typing import Any

from mnt.export.bench.runner import BASELINE, Row

ORDER = ("landmark_detector", "target_encoder", "target_landmark_transformer", "generator",
         "driver_landmark_transformer", "target_encoding", "driver_generation", "driver_streams")
STREAMS = "driver_streams"
CPU_ENGINES = {BASELINE, "onnxruntime-cpu"}


def _r(x: float | None, digits: int = 2) -> float | None:
    return None if x is None else round(x, digits)


def row_json(row: Row, matmul: Mapping[tuple[str, str], float | None], peak: float | None) -> dict[str, Any]:
    gflops = row.gflop / (row.median / 1e3) if row.gflop else None
    limit = matmul.get((row.backend, row.precision))
    return {
        "component": row.component, "backend": row.backend, "precision": row.precision, "k": row.k,
        "streams": row.streams, "pipelined": row.pipelined,
        "ms_median": _r(row.median), "ms_min": _r(min(row.ms)), "ms_max": _r(max(row.ms)),
        "iterations": len(row.ms),
        "gflop": _r(row.gflop, 3), "gflops": _r(gflops, 1),
        "fraction_of_matmul": _r(gflops / limit, 3) if gflops and limit else None,
        "fraction_of_peak": _r(gflops / peak, 3) if gflops and peak and row.backend in CPU_ENGINES else None,
        "speedup_vs_torch": _r(row.speedup(), 2),
        **row.extra,
    }


def _streams_summary(mine: list[dict[str, Any]]) -> dict[str, Any]:
    """Total frames per second of N pipelined streams over one, at the smallest K."""
    rows = [r for r in mine if r["component"] == STREAMS and r["pipelined"]]
    if not rows:
        return {}
    k = min(r["k"] for r in rows)
    fps = {r["streams"]: r["frames_per_second"] for r in rows if r["k"] == k}
    if 1 not in fps or not fps[1]:
        return {}
    return {f"pipelined_fps_{n}_streams_over_1": _r(v / fps[1], 3) for n, v in sorted(fps.items()) if n > 1}


def summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per backend: generator time at the largest K over the smallest, the share of an
    end-to-end frame spent outside the networks, its landmark step over mediapipe's, and
    the throughput of N streams over one."""
    out: dict[str, Any] = {}
    for backend in sorted({r["backend"] for r in rows}):
        mine = [r for r in rows if r["backend"] == backend]
        gen = sorted((r for r in mine if r["component"] == "generator"), key=lambda r: r["k"])
        entry: dict[str, Any] = {}
        if len(gen) > 1:
            entry[f"generator_k{gen[-1]['k']}_over_k{gen[0]['k']}"] = _r(
                gen[-1]["ms_median"] / gen[0]["ms_median"], 3)
        outside = [r["outside_networks_fraction"] for r in mine
                   if r["component"] == "driver_generation" and "outside_networks_fraction" in r]
        if outside:
            entry["outside_networks_fraction"] = _r(statistics.median(outside), 3)
        landmarks = [r["speedup_vs_mediapipe"] for r in mine
                     if r["component"] == "landmark_detector" and "speedup_vs_mediapipe" in r]
        if landmarks:
            entry["landmarks_speedup_vs_mediapipe"] = landmarks[0]
        entry.update(_streams_summary(mine))
        if entry:
            out[backend] = entry
    return out


def report(machine: dict[str, Any], settings: dict[str, Any], rows: list[Row],
           matmul: Mapping[tuple[str, str], float | None]) -> dict[str, Any]:
    ordered = sorted(rows, key=lambda r: (ORDER.index(r.component), r.k, r.backend != BASELINE, r.backend,
                                          r.streams, not r.pipelined))
    as_json = [row_json(r, matmul, machine["cpu"].get("fp32_peak_gflops")) for r in ordered]
    machine = {**machine, "matmul_gflops": {f"{b}/{p}": _r(v, 1) for (b, p), v in matmul.items()}}
    return {"machine": machine, "settings": settings, "rows": as_json, "summary": summary(as_json)}


def _cell(value: Any, fmt: str = "{}") -> str:
    return "–" if value is None else fmt.format(value)


def _streams_table(rows: list[dict[str, Any]]) -> list[str]:
    """The streaming rows: N streams at once on one model, each through decode, landmarks,
    generator and H.264 encode."""
    if not rows:
        return []
    lines = ["", "| streams | pipelined | K | backend | landmarks | frames/s (all streams) "
             "| latency median ms | p99 ms | dropped | bytes to device / frame |",
             "|--:|---|--:|---|---|--:|--:|--:|--:|--:|"]
    for r in rows:
        lines.append(
            f"| {r['streams']} | {'yes' if r['pipelined'] else 'no'} | {r['k']} | {r['backend']} "
            f"| {r['landmarks']} | {r['frames_per_second']:.1f} | {r['latency_ms_median']:.1f} "
            f"| {r['latency_ms_p99']:.1f} | {r['dropped']} | {r['bytes_per_frame']:,} |")
    return lines


def markdown(data: dict[str, Any]) -> str:
    m, cpu = data["machine"], data["machine"]["cpu"]
    gpu = m.get("gpu")
    lines = [
        f"**Machine:** {cpu['model']}, {cpu['cores']} cores, {cpu['simd']}, "
        f"{_cell(cpu['clock_ghz'])} GHz ({cpu['clock_source']}); FP32 peak "
        f"{_cell(cpu['fp32_peak_gflops'])} GFLOP/s ({cpu['peak_formula']}); "
        f"GPU: {gpu['name'] + ' (sm ' + gpu['compute_capability'] + ')' if gpu else 'none'}.",
        "**Measured matrix multiply** (2048², best of 5): "
        + ", ".join(f"{k} {_cell(v)} GFLOP/s" for k, v in m["matmul_gflops"].items()) + ".",
        "**Versions:** " + ", ".join(f"{k} {v}" for k, v in m["versions"].items()) + ".",
        f"**Settings:** {', '.join(f'{k} {v}' for k, v in data['settings'].items())}.",
        "",
        "| component | K | backend | precision | median ms | min | max | GFLOP | GFLOP/s "
        "| of matmul | of peak | × torch |",
        "|---|--:|---|---|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for r in data["rows"]:
        if r["component"] == STREAMS:
            continue
        lines.append(
            f"| {r['component']} | {r['k']} | {r['backend']} | {r['precision']} | {r['ms_median']:.1f} "
            f"| {r['ms_min']:.1f} | {r['ms_max']:.1f} | {_cell(r['gflop'], '{:.2f}')} "
            f"| {_cell(r['gflops'], '{:.1f}')} | {_cell(r['fraction_of_matmul'], '{:.0%}')} "
            f"| {_cell(r['fraction_of_peak'], '{:.0%}')} | {_cell(r['speedup_vs_torch'], '{:.2f}×')} |")
    lines += _streams_table([r for r in data["rows"] if r["component"] == STREAMS])
    lines.append("")
    for backend, entry in data["summary"].items():
        parts = [f"{k.replace('_', ' ')} {v:.0%}" if "fraction" in k else f"{k.replace('_', ' ')} {v:.3f}"
                 for k, v in entry.items() if v is not None]
        lines.append(f"- **{backend}:** " + "; ".join(parts))
    lines.append(f"- peak resident memory: {m['peak_rss_mb']:.0f} MB (the whole process)")
    return "\n".join(lines) + "\n"
