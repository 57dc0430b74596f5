"""`mnt-export verify` and `inspect`: re-run an artefact folder's components on their
stored golden inputs (on this machine's backend) and summarise a folder. The results are
data first (rows, a verdict, a summary dict); text and --json are both rendered from them."""

from __future__ import annotations

import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mnt.export.faces.gates import failures_by_output
from mnt.export.faces.models import MODELS
from mnt.export.faces.parity import compare
from mnt.export.onnx.gates import Error, judge
from mnt.runtime.backends.onnxruntime import OnnxRuntimeBackend
from mnt.runtime.errors import RuntimeStageError
from mnt.runtime.manifest import STATS_NAME, ComponentInfo, Manifest, check_hashes, load_manifest
from mnt.runtime.reenactor import load_stats

MODELS_BY_COMPONENT = {m.component: m for m in MODELS}
CHANGED = "file changed since the build (sha256 mismatch)"
NO_GOLDEN = "no golden data stored"


@dataclass(frozen=True)
class Row:
    component: str
    output: str
    built_psnr_db: float | None
    psnr_db: float | None
    max_abs_error: float | None
    status: str  # "ok" or what failed

    @property
    def drifted(self) -> bool:
        """Failed on the numbers: the files were intact and measured, and missed the gate."""
        return self.status != "ok" and self.psnr_db is not None


def verify(folder: Path, device: str = "cpu", allow_fallback: bool = False
           ) -> tuple[Manifest, list[Row]]:
    manifest = load_manifest(folder)
    tampered = set(check_hashes(folder, manifest))
    rows = []
    for name, info in manifest.components.items():
        if info.file in tampered or (info.golden and info.golden["file"] in tampered):
            rows.append(Row(name, "*", info.accuracy.get("psnr_db"), None, None, CHANGED))
            continue
        if not info.golden:
            rows.append(Row(name, "*", None, None, None, NO_GOLDEN))
            continue
        golden = _golden(folder, info)
        if isinstance(golden, str):
            rows.append(Row(name, "*", None, None, None, golden))
            continue
        feeds = {t.name: golden[f"input:{t.name}"] for t in info.inputs}
        with OnnxRuntimeBackend(info, folder, device, allow_fallback) as backend:
            got = backend.infer(feeds)
            for t in info.outputs:
                error = Error.between(got[t.name], golden[f"output:{t.name}"])
                built = info.accuracy["outputs"][t.name]
                torch32 = Error(*(built["torch_fp32"][key] for key in ("max_abs_error", "rmse", "psnr_db")))
                failures = judge(info.precision, t.name, error, torch32)
                rows.append(Row(name, t.name, built["psnr_db"], error.psnr_db, error.max_abs_error,
                                "; ".join(failures) or "ok"))
    for name, info in manifest.faces.items():
        rows += _verify_face(folder, name, info, tampered, device, allow_fallback)
    if STATS_NAME not in tampered:  # by value: a hash only says they are the build's
        try:
            load_stats(folder)
        except RuntimeStageError as err:
            rows.append(Row("-", STATS_NAME, None, None, None, str(err)))
    every = manifest.all_components.values()
    for extra in sorted(tampered - {c.file for c in every} - {c.golden["file"] for c in every if c.golden}):
        rows.append(Row("-", extra, None, None, None, CHANGED))
    return manifest, rows


def _verify_face(folder: Path, name: str, info: ComponentInfo, tampered: set[str], device: str,
                 allow_fallback: bool) -> list[Row]:
    """A face component on its golden (a real face), against the TFLite outputs stored at
    the build, judged by its own gate (pixels and probabilities)."""
    if info.file in tampered or (info.golden and info.golden["file"] in tampered):
        return [Row(name, "*", info.accuracy.get("psnr_db"), None, None, CHANGED)]
    if not info.golden:
        return [Row(name, "*", None, None, None, NO_GOLDEN)]
    model = MODELS_BY_COMPONENT.get(name)
    if model is None:
        return [Row(name, "*", None, None, None, f"unknown face component (this mnt knows "
                                                 f"{', '.join(MODELS_BY_COMPONENT)})")]
    golden = _golden(folder, info)
    if isinstance(golden, str):
        return [Row(name, "*", None, None, None, golden)]
    with OnnxRuntimeBackend(info, folder, device, allow_fallback) as backend:
        got = backend.infer({t.name: golden[f"input:{t.name}"] for t in info.inputs})
        got = {k: np.array(v) for k, v in got.items()}
    want = {t.name: golden[f"output:{t.name}"] for t in info.outputs}
    figures = compare(model, [got], [want])
    failures = failures_by_output(name, info.precision, figures)
    rows = []
    for t in info.outputs:
        error = Error.between(got[t.name], want[t.name])
        built = info.accuracy["outputs"][t.name]
        rows.append(Row(name, t.name, built["psnr_db"], error.psnr_db, error.max_abs_error,
                        "; ".join(failures.get(t.name, [])) or "ok"))
    return rows


def _golden(folder: Path, info: ComponentInfo) -> dict[str, np.ndarray] | str:
    """A component's stored inputs and outputs, or why they cannot be used (a file that
    matches its hash can still be no golden: the manifest is untrusted)."""
    names = [f"input:{t.name}" for t in info.inputs] + [f"output:{t.name}" for t in info.outputs]
    try:
        with np.load(folder / info.golden["file"], allow_pickle=False) as data:
            return {name: np.array(data[name]) for name in names}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as err:
        return f"golden data unreadable ({type(err).__name__}: {str(err)[:80]})"


def format_rows(rows: list[Row]) -> str:
    def num(value: float | None, fmt: str) -> str:
        return "-" if value is None else format(value, fmt)

    lines = [f"{'component':<22}{'output':<18}{'built dB':>9}{'now dB':>9}{'max abs':>10}  status",
             "(built: worst over the build's K values; now: the stored goldens, K=3)"]
    lines += [f"{r.component:<22}{r.output:<18}{num(r.built_psnr_db, '.1f'):>9}"
              f"{num(r.psnr_db, '.1f'):>9}{num(r.max_abs_error, '.2e'):>10}  {r.status}" for r in rows]
    return "\n".join(lines)


def verdict(folder: Path, rows: list[Row]) -> dict[str, Any]:
    """passed, the counts (drifted: failed on the numbers, the rest on missing or changed
    files) and the closing line."""
    bad = [r for r in rows if r.status != "ok"]
    line = (f"{folder}: {len(bad)} of {len(rows)} checks failed" if bad
            else f"{folder}: all {len(rows)} outputs within their thresholds")
    return {"passed": not bad, "checks": len(rows), "failed": len(bad),
            "drifted": sum(r.drifted for r in bad), "line": line}


def report(folder: Path, device: str, rows: list[Row]) -> dict[str, Any]:
    """What `verify --json` prints: the rows as they are, and the verdict."""
    return {"folder": str(folder), "device": device,
            "rows": [{**asdict(r), "drifted": r.drifted} for r in rows], "verdict": verdict(folder, rows)}


def _size(path: Path) -> int | None:
    return path.stat().st_size if path.exists() else None


def summarise(folder: Path) -> dict[str, Any]:
    """What `inspect` shows (and `inspect --json` prints), from the folder's manifest."""
    manifest = load_manifest(folder)
    components = []
    for name, c in manifest.all_components.items():
        path = folder / c.file
        components.append({
            "name": name, "file": c.file, "phase": c.phase, "precision": c.precision,
            "variant": c.variant, "size_bytes": path.stat().st_size if path.exists() else None,
            "psnr_db": c.accuracy["psnr_db"], "max_abs_error": c.accuracy["max_abs_error"],
            "passed": bool(c.accuracy["passed"]),
            "inputs": [t.to_json() for t in c.inputs], "outputs": [t.to_json() for t in c.outputs],
            "dims": {d: [lo, hi] for d, (lo, hi) in c.dims.items()},
            "custom_ops": dict(c.custom_ops), "source": c.source,
            "engines": {runtime: {**e.to_json(), "size_bytes": _size(folder / e.file)}
                        for runtime, e in c.engines.items()},
        })
    return {"folder": str(folder), "tool_version": manifest.tool_version, "precision": manifest.precision,
            "opset": manifest.opset, "checkpoint_sha256": manifest.checkpoint_sha256,
            "model": manifest.model, "versions": manifest.versions, "components": components}


def format_summary(summary: dict[str, Any]) -> str:
    model = summary["model"]
    lines = [
        f"{summary['folder']}: mnt {summary['tool_version']}, {summary['precision']}, opset "
        f"{summary['opset']}, checkpoint {summary['checkpoint_sha256'][:12]}",
        f"model: {model['image_size']}x{model['image_size']}, channels "
        f"{model['base_channels']}->{model['max_channels']}",
        "toolchain: " + ", ".join(f"{k} {v}" for k, v in summary["versions"].items()),
        f"{'component':<22}{'phase':<8}{'size MB':>8}{'dB':>8}{'max abs':>10}{'gate':>6}  inputs",
    ]
    for c in summary["components"]:
        size = "-" if c["size_bytes"] is None else f"{c['size_bytes'] / 1e6:.1f}"
        dims = ", ".join(f"{d} {lo}..{hi}" for d, (lo, hi) in c["dims"].items())
        shapes = "; ".join(f"{t['name']} {list(t['shape'])}" for t in c["inputs"][:2])
        more = f" (+{len(c['inputs']) - 2} more)" if len(c["inputs"]) > 2 else ""
        lines.append(f"{c['name']:<22}{c['phase']:<8}{size:>8}{c['psnr_db']:>8.1f}"
                     f"{c['max_abs_error']:>10.2e}"
                     f"{'pass' if c['passed'] else 'FAIL':>6}  {shapes}{more}"
                     + (f" [{dims}]" if dims else ""))
    engines = [e for c in summary["components"] for e in c["engines"].values()]
    if engines:
        lines.append(f"{'engine':<34}{'runtime':<14}{'version':<12}{'size MB':>8}  GPUs (compute capability)")
    for e in engines:
        size = "-" if e["size_bytes"] is None else f"{e['size_bytes'] / 1e6:.1f}"
        gpus = ", ".join(e.get("compute_capabilities") or [e["compute_capability"]])
        lines.append(f"{e['file']:<34}{e['runtime']:<14}{e['tensorrt_version']:<12}{size:>8}  {gpus}"
                     + (" (our plugins)" if e["ops"] == "plugins" else ""))
    return "\n".join(lines)


def describe_folder(folder: Path) -> str:
    return format_summary(summarise(folder))
