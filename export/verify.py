"""`mnt-export verify` and `inspect`: re-run an artefact folder's components on their
stored golden inputs (on this machine's backend) and summarise a folder."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mnt.export.parity import Error, judge
from mnt.runtime.backends.onnxruntime import OnnxRuntimeBackend
from mnt.runtime.manifest import Manifest, check_hashes, load_manifest


@dataclass(frozen=True)
class Row:
    component: str
    output: str
    built_psnr_db: float | None
    psnr_db: float | None
    max_abs_error: float | None
    status: str  # "ok" or what failed


def verify(folder: Path, device: str = "cpu", allow_fallback: bool = False
           ) -> tuple[Manifest, list[Row]]:
    manifest = load_manifest(folder)
    tampered = set(check_hashes(folder, manifest))
    rows = []
    for name, info in manifest.components.items():
        if info.file in tampered or (info.golden and info.golden["file"] in tampered):
            rows.append(Row(name, "*", info.accuracy.get("psnr_db"), None, None,
                            "file changed since the build (sha256 mismatch)"))
            continue
        if not info.golden:
            rows.append(Row(name, "*", None, None, None, "no golden data stored"))
            continue
        golden = np.load(folder / info.golden["file"])
        feeds = {t.name: golden[f"input:{t.name}"] for t in info.inputs}
        with OnnxRuntimeBackend(info, folder, device, allow_fallback) as backend:
            got = backend.infer(feeds)
            for t in info.outputs:
                error = Error.between(got[t.name], golden[f"output:{t.name}"])
                built = info.accuracy["outputs"][t.name]
                torch32 = Error(**built["torch_fp32"])
                failures = judge(info.precision, t.name, error, torch32)
                rows.append(Row(name, t.name, built["psnr_db"], error.psnr_db, error.max_abs_error,
                                "; ".join(failures) or "ok"))
    for extra in sorted(tampered - {c.file for c in manifest.components.values()}
                        - {c.golden["file"] for c in manifest.components.values() if c.golden}):
        rows.append(Row("-", extra, None, None, None, "file changed since the build (sha256 mismatch)"))
    return manifest, rows


def format_rows(rows: list[Row]) -> str:
    def num(value: float | None, fmt: str) -> str:
        return "-" if value is None else format(value, fmt)

    lines = [f"{'component':<22}{'output':<18}{'built dB':>9}{'now dB':>9}{'max abs':>10}  status",
             "(built: worst over the build's K values; now: the stored goldens, K=3)"]
    lines += [f"{r.component:<22}{r.output:<18}{num(r.built_psnr_db, '.1f'):>9}"
              f"{num(r.psnr_db, '.1f'):>9}{num(r.max_abs_error, '.2e'):>10}  {r.status}" for r in rows]
    return "\n".join(lines)


def describe_folder(folder: Path) -> str:
    manifest = load_manifest(folder)
    model = manifest.model
    lines = [
        f"{folder}: mnt {manifest.tool_version}, {manifest.precision}, opset {manifest.opset}, "
        f"checkpoint {manifest.checkpoint_sha256[:12]}",
        f"model: {model['image_size']}x{model['image_size']}, channels "
        f"{model['base_channels']}->{model['max_channels']}",
        "toolchain: " + ", ".join(f"{k} {v}" for k, v in manifest.versions.items()),
        f"{'component':<22}{'phase':<8}{'size MB':>8}{'dB':>8}{'max abs':>10}{'gate':>6}  inputs",
    ]
    for name, c in manifest.components.items():
        size = (folder / c.file).stat().st_size / 1e6 if (folder / c.file).exists() else float("nan")
        dims = ", ".join(f"{d} {lo}..{hi}" for d, (lo, hi) in c.dims.items())
        shapes = "; ".join(f"{t.name} {list(t.shape)}" for t in c.inputs[:2])
        more = f" (+{len(c.inputs) - 2} more)" if len(c.inputs) > 2 else ""
        lines.append(f"{name:<22}{c.phase:<8}{size:>8.1f}{c.accuracy['psnr_db']:>8.1f}"
                     f"{c.accuracy['max_abs_error']:>10.2e}"
                     f"{'pass' if c.accuracy['passed'] else 'FAIL':>6}  {shapes}{more} [{dims}]")
    return "\n".join(lines)
