"""TensorRT engines from the typed ONNX components.

The network is strongly typed: TensorRT compiles the FP16/FP32 types written in the ONNX
graph as they are and never lowers or raises a precision, so no precision flags are set.
One optimisation profile covers the dynamic axes (K or N = 1..8). Each build reads and
extends a timing cache file, and every engine lands in an engine cache keyed by
`build_key`: the ONNX hash, the build settings, the TensorRT version, the GPU's compute
capability and the hash of the kernel library whose PTX a plugin engine embeds.

`ops`: "native" builds the standard ONNX with TensorRT's own GridSample and attention
layers; "plugins" builds the plugin-variant ONNX, whose `mnt::Warp` / `mnt::CrossAttention`
nodes become our kernels (export/tensorrt/plugins.py). Nothing here constructs a TensorRT
object unless TensorRT and a GPU were found first (`engines_unavailable`).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mnt.export.errors import AccuracyError, ExportError
from mnt.runtime.backends import registry
from mnt.runtime.files import atomic_path, sha256_file
from mnt.runtime.gpu import probe_gpu, tensorrt_version
from mnt.runtime.manifest import ComponentInfo, EngineInfo, Manifest, load_manifest

if TYPE_CHECKING:
    import tensorrt as trt

ENGINE_OPS = ("native", "plugins")
KEY_VERSION = 1  # bump when the meaning of a key's inputs changes
Log = Callable[[str], None]


@dataclass(frozen=True)
class EngineSettings:
    """Everything about a build that changes the engine, besides ONNX, TensorRT and GPU."""

    ops: str = "native"
    opt: int = 1  # the profile's optimum for every dynamic axis: K = 1 is the common case
    optimization_level: int = 3  # TensorRT's default; 5 searches longer
    workspace_mib: int = 2048  # cap on the builder's scratch memory (Orin Nano has 8 GiB in all)

    def __post_init__(self) -> None:
        if self.ops not in ENGINE_OPS:
            raise ExportError(f"unknown engine ops {self.ops!r}; choose one of {', '.join(ENGINE_OPS)}")


@dataclass(frozen=True)
class BuildTarget:
    """The machine an engine is built on, and only valid on."""

    tensorrt_version: str
    compute_capability: str
    gpu_name: str = ""


def engines_unavailable() -> str | None:
    """None when engines can be built here (TensorRT and a GPU), else why not; the backend
    registry's answer for TensorRT, without a folder."""
    return registry.unavailable("tensorrt")


def current_target() -> BuildTarget:
    reason = engines_unavailable()
    if reason:
        raise ExportError(f"cannot build TensorRT engines here: {reason}")
    probe = probe_gpu()
    return BuildTarget(str(tensorrt_version()), probe.compute_capability, probe.name)


def profile_shapes(info: ComponentInfo, opt: int) -> dict[str, tuple[tuple[int, ...], ...]]:
    """Input name -> (min, opt, max) shapes: each dynamic axis over its manifest range, its
    optimum `opt` clamped into the range."""
    shapes = {}
    for t in info.inputs:
        rows = []
        for pick in ("min", "opt", "max"):
            dims = []
            for d in t.shape:
                if isinstance(d, str):
                    lo, hi = info.dims[d]
                    dims.append({"min": lo, "opt": min(max(opt, lo), hi), "max": hi}[pick])
                else:
                    dims.append(d)
            rows.append(tuple(dims))
        shapes[t.name] = tuple(rows)
    return shapes


def build_key(onnx_sha256: str, settings: EngineSettings, target: BuildTarget,
              plugin_library_sha256: str | None, profile: dict[str, Any] | None = None) -> str:
    """sha256 over every input that changes the engine; equal keys may share one engine."""
    material = {"key_version": KEY_VERSION, "onnx_sha256": onnx_sha256, "settings": asdict(settings),
                "tensorrt_version": target.tensorrt_version,
                "compute_capability": target.compute_capability,
                "plugin_library_sha256": plugin_library_sha256, "profile": profile}
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()


def cache_root() -> Path:
    from mnt.runtime.defaults import cache_dir

    return cache_dir() / "tensorrt"


def timing_cache_path(target: BuildTarget) -> Path:
    """One timing cache per TensorRT version and GPU kind: tactic timings transfer between
    builds on the same machine, never across versions or GPUs."""
    return cache_root() / f"timing-trt{target.tensorrt_version}-sm{target.compute_capability}.cache"


def engine_cache_path(key: str) -> Path:
    return cache_root() / "engines" / f"{key}.engine"


def build_engine(onnx_path: Path, info: ComponentInfo, settings: EngineSettings, target: BuildTarget,
                 out: Path, plugin_library_sha256: str | None = None,
                 register_plugins: Callable[[], None] | None = None, log: Log = print) -> EngineInfo:
    """Build (or take from the engine cache) the engine of one component into `out`; -> its
    manifest entry. `register_plugins` registers mnt::Warp / mnt::CrossAttention with
    TensorRT before the parser meets them (ops "plugins")."""
    if settings.ops == "plugins" and register_plugins is None:
        raise ExportError(f"{info.name}: ops 'plugins' needs the kernel library's plugins")
    onnx_sha256 = sha256_file(onnx_path)
    profile = profile_shapes(info, settings.opt)
    key = build_key(onnx_sha256, settings, target, plugin_library_sha256,
                    {name: [list(s) for s in rows] for name, rows in profile.items()})
    cached = engine_cache_path(key)
    if cached.is_file():
        log(f"{info.name}: engine taken from the cache ({cached})")
    else:
        if register_plugins is not None:
            register_plugins()
        started = time.perf_counter()
        log(f"{info.name}: building a TensorRT {target.tensorrt_version} engine for sm_"
            f"{target.compute_capability.replace('.', '')} ({settings.ops} ops, profile "
            f"{_describe_profile(info)}) ...")
        serialized = _compile(onnx_path, info, settings, target, profile, log)
        cached.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(cached) as temporary:
            temporary.write_bytes(serialized)
        log(f"{info.name}: engine built in {time.perf_counter() - started:.0f} s "
            f"({len(serialized) / 1e6:.1f} MB)")
    with atomic_path(out) as temporary:
        shutil.copyfile(cached, temporary)
    return EngineInfo(file=out.name, sha256=sha256_file(out), tensorrt_version=target.tensorrt_version,
                      compute_capability=target.compute_capability,
                      plugin_library_sha256=plugin_library_sha256, build_key=key, ops=settings.ops)


def skipped_line(folder: Path, reason: str) -> str:
    """The one line that ends a build without engines: what, why, and how to get them."""
    return (f"TensorRT engines skipped: {reason}; on the target device run "
            f"`mnt-export build --from {folder}` to build them into {folder}")


def kernels_folder(kernels: Path | None) -> Path:
    """The kernel library folder for plugin engines: `kernels`, else $MNT_KERNELS_DIR."""
    found = kernels or (Path(os.environ["MNT_KERNELS_DIR"]) if os.environ.get("MNT_KERNELS_DIR") else None)
    if found is None:
        raise ExportError("the plugin-variant graphs need our kernel library for their TensorRT plugins",
                          hint="build it on this machine with `mnt-export kernels --out DIR`, then pass "
                               "--kernels DIR (or set MNT_KERNELS_DIR=DIR)")
    return found


def engines_or_skip(folder: Path, kernels: Path | None = None, log: Log = print) -> str:
    """Build the folder's engines when TensorRT and a GPU are here; -> the closing line
    (the one line saying they were skipped, why, and how to build them elsewhere)."""
    reason = engines_unavailable()
    if reason:
        return skipped_line(folder, reason)
    build_engines(folder, kernels=kernels, log=log)
    return (f"TensorRT engines written to {folder}; run them with "
            f"`mnt-run --backend tensorrt --artifacts {folder}`")


def verify_goldens(folder: Path, log: Log = print) -> Manifest:
    """`--from`: the folder's ONNX must still reproduce its stored goldens (ONNX Runtime on
    the CPU, the build's thresholds) before engines are built from them."""
    from mnt.export.onnx.verify import format_rows, verify

    manifest, rows = verify(folder)
    bad = [r for r in rows if r.status != "ok"]
    if bad:
        log(format_rows(rows))
        raise (AccuracyError if any(r.drifted for r in bad) else ExportError)(
            f"{folder}: {len(bad)} of {len(rows)} golden checks failed; no engines built",
            hint="rebuild the folder with `mnt-export build --checkpoint CKPT --out DIR`")
    log(f"{folder}: the ONNX reproduce their goldens ({len(rows)} outputs within the build's thresholds)")
    return manifest


def build_engines(folder: Path, settings: EngineSettings = EngineSettings(), kernels: Path | None = None,
                  log: Log = print) -> Manifest:
    """An engine for every component of an artefact folder, built from its ONNX as they
    are (plugin-variant components with our plugins, the others with native layers); then
    the manifest is rewritten (atomically) with the engine entries."""
    manifest = load_manifest(folder)
    target = current_target()
    log(f"TensorRT {target.tensorrt_version} on {target.gpu_name} (compute capability "
        f"{target.compute_capability}); timing cache {timing_cache_path(target)}")
    plugin_sha: str | None = None
    register: Callable[[], None] | None = None
    if any(c.custom_ops for c in manifest.components.values()):
        from mnt.export.tensorrt.plugins import load_plugin_kernels, register_plugins

        library = load_plugin_kernels(kernels_folder(kernels))
        plugin_sha = library.sha256
        register = lambda: register_plugins(library)  # noqa: E731
    components = {}
    for name, info in manifest.components.items():
        plugins = bool(info.custom_ops)
        ops = "plugins" if plugins else "native"
        engine = build_engine(folder / info.file, info, replace(settings, ops=ops), target,
                              folder / f"{name}.engine", plugin_sha if plugins else None,
                              register if plugins else None, log)
        components[name] = replace(info, engine=engine)
    updated = replace(manifest, components=components,
                      versions={**manifest.versions, "tensorrt": target.tensorrt_version})
    updated.write(folder)
    return updated


def _describe_profile(info: ComponentInfo) -> str:
    return ", ".join(f"{d} {lo}..{hi}" for d, (lo, hi) in info.dims.items()) or "static"


def plugin_onnx_bytes(onnx_path: Path) -> bytes:
    """The plugin-variant graph as TensorRT's ONNX parser should see it: each `mnt::` node
    also carries its domain as `plugin_namespace` (parsers before 10.10 ignore the node's domain)
    and `aot=1` (use the ahead-of-time implementation). In memory only: the file on disk
    keeps the contract's attribute-free nodes, and its hash stays the one in the manifest."""
    import onnx

    from mnt.kernels.spec import OPS, op_spec

    domains = {op_spec(op)["domain"] for op in OPS}
    model = onnx.load(str(onnx_path), load_external_data=False)
    found = 0
    for node in model.graph.node:
        if node.domain not in domains:
            continue
        found += 1
        names = {a.name for a in node.attribute}
        if "plugin_namespace" not in names:
            node.attribute.append(onnx.helper.make_attribute("plugin_namespace", node.domain))
        if "aot" not in names:
            node.attribute.append(onnx.helper.make_attribute("aot", 1))
    if not found:
        raise ExportError(f"{onnx_path} has no mnt:: nodes; it is not a plugin-variant graph",
                          hint="build it with `mnt-export build --plugins`")
    return bytes(model.SerializeToString())


def _compile(onnx_path: Path, info: ComponentInfo, settings: EngineSettings, target: BuildTarget,
             profile: dict[str, tuple[tuple[int, ...], ...]], log: Log) -> bytes:
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    if settings.ops == "plugins":  # our plugins define only an AOT implementation; say so anyway
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.PREFER_AOT_PYTHON_PLUGINS)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    model = plugin_onnx_bytes(onnx_path) if settings.ops == "plugins" else onnx_path.read_bytes()
    if not parser.parse(model, str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ExportError(f"{info.name}: TensorRT's ONNX parser rejected {onnx_path.name}: {errors}")
    _check_network_io(network, info)
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, settings.workspace_mib << 20)
    config.builder_optimization_level = settings.optimization_level
    config.clear_flag(trt.BuilderFlag.TF32)  # on by default: a silent FP32 -> TF32 lowering
    optimisation = builder.create_optimization_profile()
    for name, (lo, opt, hi) in profile.items():
        optimisation.set_shape(name, trt.Dims(list(lo)), trt.Dims(list(opt)), trt.Dims(list(hi)))
    config.add_optimization_profile(optimisation)
    timing_path = timing_cache_path(target)
    timing = config.create_timing_cache(timing_path.read_bytes() if timing_path.is_file() else b"")
    config.set_timing_cache(timing, False)
    monitor = _progress_monitor(info.name, log)
    config.progress_monitor = monitor
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ExportError(f"{info.name}: TensorRT could not build an engine (its log above says why)",
                          hint="free GPU memory and rerun, or build from Python with more workspace or "
                               "a lower optimisation level: mnt.export.tensorrt.builder.build_engines("
                               "folder, EngineSettings(workspace_mib=4096, optimization_level=1))")
    timing_path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(timing_path) as temporary:
        temporary.write_bytes(bytes(memoryview(config.get_timing_cache().serialize())))
    return bytes(memoryview(serialized))


def _check_network_io(network: trt.INetworkDefinition, info: ComponentInfo) -> None:
    """The parsed network must have the manifest's inputs and outputs with its dtypes: the
    strongly typed build keeps them, and the runtime binds buffers by these names."""
    import numpy as np
    import tensorrt as trt

    got = {}
    for i in range(network.num_inputs):
        t = network.get_input(i)
        got[t.name] = np.dtype(trt.nptype(t.dtype)).name
    for i in range(network.num_outputs):
        t = network.get_output(i)
        got[t.name] = np.dtype(trt.nptype(t.dtype)).name
    want = {t.name: t.dtype for t in (*info.inputs, *info.outputs)}
    if got != want:
        raise ExportError(f"{info.name}: the parsed network's inputs and outputs {got} differ from the "
                          f"manifest's {want}")


def _progress_monitor(component: str, log: Log) -> trt.IProgressMonitor:
    """Top-level build phases as progress lines (TensorRT calls this from its threads)."""
    import tensorrt as trt

    class Progress(trt.IProgressMonitor):
        def __init__(self) -> None:
            trt.IProgressMonitor.__init__(self)
            self.started: dict[str, float] = {}

        def phase_start(self, phase_name: str, parent_phase: str | None, num_steps: int) -> None:
            if parent_phase is None:
                self.started[phase_name] = time.perf_counter()
                log(f"{component}:   {phase_name} ({num_steps} steps) ...")

        def step_complete(self, phase_name: str, step: int) -> bool:
            return True  # never cancel

        def phase_finish(self, phase_name: str) -> None:
            if phase_name in self.started:
                log(f"{component}:   {phase_name} done in "
                    f"{time.perf_counter() - self.started.pop(phase_name):.1f} s")

    return Progress()
