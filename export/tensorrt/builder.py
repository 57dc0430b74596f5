"""TensorRT engines from the typed ONNX components.

The network is strongly typed: TensorRT compiles the FP16/FP32 types written in the ONNX
graph as they are and never lowers or raises a precision, so no precision flags are set.
Optimisation profiles split the dynamic axis (K or N = 1..8) into ranges, each tuned for
its own optimum (K = 1, 4, 8 by default), and the runtime picks the one holding a call's K.
TensorRT-RTX engines are built with REQUIRE_USER_ALLOCATION, which makes their inference
capturable in a CUDA graph. Each build reads and extends a timing cache file, and every
engine lands in an engine cache keyed by `build_key`: the ONNX hash, the build settings,
the TensorRT version, the GPU's compute capability and the hash of the kernel library whose
PTX a plugin engine embeds.

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
from mnt.runtime.backends.tensorrt import RUNTIMES  # runtime -> (module, name, install)
from mnt.runtime.files import atomic_path, exclusive, sha256_file
from mnt.runtime.gpu import probe_gpu, tensorrt_version
from mnt.runtime.manifest import ComponentInfo, EngineInfo, Manifest, load_manifest

if TYPE_CHECKING:
    import tensorrt as trt

ENGINE_OPS = ("native", "plugins")
# TensorRT-RTX's default targets: Ampere, Ada, Blackwell RTX GPUs (7.5, Turing, on request).
RTX_CAPABILITIES = ("8.0", "8.6", "8.9", "12.0")
KEY_VERSION = 3  # bump when the meaning of a key's inputs changes (3: profiles, RTX user allocation)
# TensorRT's known defects that touch this model (DESIGN.md section 7, with their trackers).
# onnx-tensorrt reads GridSample-20's mode "linear" as nearest, silently: the exporter's
# opset 18 spells it "bilinear" (GridSample-16), which imports right.
GRID_SAMPLE_LINEAR_OPSET = 20
# Since TensorRT 10.14.1.48 a grid sample kept in FP32 inside a strongly typed FP16 network
# gives wrong output (pytorch/TensorRT 4074): this model's FP16 graphs have such islands.
FP32_ISLAND_GRID_SAMPLE_DEFECT = (10, 14, 1, 48)
Log = Callable[[str], None]


@dataclass(frozen=True)
class EngineSettings:
    """Everything about a build that changes the engine, besides ONNX, TensorRT and GPU."""

    ops: str = "native"
    runtime: str = "tensorrt"  # or "tensorrt-rtx": portable engines, built without a GPU
    compute_capabilities: tuple[str, ...] = RTX_CAPABILITIES  # tensorrt-rtx only
    # One optimisation profile per optimum: K = 1 (one photo, the common case) up to 8.
    opts: tuple[int, ...] = (1, 4, 8)
    optimization_level: int = 3  # TensorRT's default; 5 searches longer
    workspace_mib: int = 2048  # cap on the builder's scratch memory (Orin Nano has 8 GiB in all)

    def __post_init__(self) -> None:
        if self.ops not in ENGINE_OPS:
            raise ExportError(f"unknown engine ops {self.ops!r}; choose one of {', '.join(ENGINE_OPS)}")
        if self.runtime not in RUNTIMES:
            raise ExportError(f"unknown engine runtime {self.runtime!r}; choose one of "
                              f"{', '.join(RUNTIMES)}")
        if self.runtime == "tensorrt":  # its engines are for the GPU they are built on
            object.__setattr__(self, "compute_capabilities", ())
        if not self.opts or list(self.opts) != sorted(set(self.opts)) or self.opts[0] < 1:
            raise ExportError(f"profile optima {self.opts} must be rising and positive, e.g. (1, 4, 8)")


@dataclass(frozen=True)
class BuildTarget:
    """The machine an engine is built on, and only valid on."""

    tensorrt_version: str  # of the runtime that builds (and must run) the engine
    compute_capability: str  # tensorrt: this GPU's; tensorrt-rtx: the list, comma-separated
    gpu_name: str = ""
    runtime: str = "tensorrt"


def rtx_capabilities(text: str) -> tuple[str, ...]:
    """'80,86,89,120' (or '8.0,8.6') -> ('8.0', '8.6', '8.9', '12.0'), each one TensorRT-RTX
    can target; ExportError naming the bad one."""
    known = {"75": "7.5", "80": "8.0", "86": "8.6", "89": "8.9", "120": "12.0", "121": "12.1"}
    found = []
    for item in (x.strip() for x in text.split(",") if x.strip()):
        cc = known.get(item.replace(".", ""))
        if cc is None:
            raise ExportError(f"TensorRT-RTX cannot target compute capability {item!r}",
                              hint=f"choose from {', '.join(known)} (Turing 75, Ampere 80/86, Ada 89, "
                                   "Blackwell 120/121; no Hopper or Jetson)")
        found.append(cc)
    if not found:
        raise ExportError("no compute capabilities given", hint="e.g. --compute-capabilities 80,86,89,120")
    return tuple(sorted(set(found), key=float))


def engines_unavailable(runtime: str = "tensorrt") -> str | None:
    """None when engines of `runtime` can be built here, else why not. TensorRT needs itself
    and a GPU (the registry's answer without a folder); TensorRT-RTX builds ahead of time
    without a GPU, so it needs only its module."""
    if runtime == "tensorrt-rtx":
        if tensorrt_version("tensorrt_rtx") is None:
            return "TensorRT-RTX is not installed (pip install 'mnt[rtx]')"
        return None
    return registry.unavailable("tensorrt")


def current_target(settings: EngineSettings = EngineSettings()) -> BuildTarget:
    reason = engines_unavailable(settings.runtime)
    label = RUNTIMES[settings.runtime][1]
    if reason:
        raise ExportError(f"cannot build {label} engines here: {reason}")
    if settings.runtime == "tensorrt-rtx":
        return BuildTarget(str(tensorrt_version("tensorrt_rtx")), ",".join(settings.compute_capabilities),
                           runtime="tensorrt-rtx")
    probe = probe_gpu()
    return BuildTarget(str(tensorrt_version()), probe.compute_capability, probe.name)


Profile = dict[str, tuple[tuple[int, ...], ...]]  # input name -> (min, opt, max) shapes


def axis_ranges(lo: int, hi: int, opts: tuple[int, ...]) -> list[tuple[int, int, int]]:
    """lo..hi split at the optima: (first, optimum, last) per range, each range running from
    just above the previous optimum to its own (the last to hi); optima outside lo..hi are
    clamped into it and merged."""
    clamped = sorted({min(max(o, lo), hi) for o in opts})
    ranges, start = [], lo
    for i, o in enumerate(clamped):
        end = hi if i == len(clamped) - 1 else o
        ranges.append((start, o, end))
        start = end + 1
    return ranges


def profile_shapes(info: ComponentInfo, opts: tuple[int, ...]) -> list[Profile]:
    """The optimisation profiles of a component: one per range of `axis_ranges` over its
    dynamic axis (a component with several dynamic axes, or none, gets one profile over
    their whole ranges, tuned for the first optimum)."""
    if len(info.dims) == 1:
        (axis, (lo, hi)), = info.dims.items()
        return [_profile(info, {axis: r}) for r in axis_ranges(lo, hi, opts)]
    return [_profile(info, {d: (lo, min(max(opts[0], lo), hi), hi) for d, (lo, hi) in info.dims.items()})]


def _profile(info: ComponentInfo, ranges: dict[str, tuple[int, int, int]]) -> Profile:
    return {t.name: tuple(tuple(ranges[d][i] if isinstance(d, str) else d for d in t.shape)
                          for i in range(3)) for t in info.inputs}


def build_key(onnx_sha256: str, settings: EngineSettings, target: BuildTarget,
              plugin_library_sha256: str | None, profile: dict[str, Any] | None = None) -> str:
    """sha256 over every input that changes the engine; equal keys may share one engine."""
    material = {"key_version": KEY_VERSION, "onnx_sha256": onnx_sha256, "settings": asdict(settings),
                "runtime": target.runtime, "tensorrt_version": target.tensorrt_version,
                "compute_capability": target.compute_capability,
                "plugin_library_sha256": plugin_library_sha256, "profile": profile}
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()


def cache_root() -> Path:
    from mnt.runtime.defaults import cache_dir

    return cache_dir() / "tensorrt"


def timing_cache_path(target: BuildTarget) -> Path:
    """One timing cache per TensorRT version and GPU kind: tactic timings transfer between
    builds on the same machine, never across versions or GPUs."""
    gpus = target.compute_capability.replace(",", "-")
    runtime = "rtx" if target.runtime == "tensorrt-rtx" else "trt"
    return cache_root() / f"timing-{runtime}{target.tensorrt_version}-sm{gpus}.cache"


def engine_cache_path(key: str) -> Path:
    return cache_root() / "engines" / f"{key}.engine"


def build_engine(onnx_path: Path, info: ComponentInfo, settings: EngineSettings, target: BuildTarget,
                 out: Path, plugin_library_sha256: str | None = None,
                 register_plugins: Callable[[], None] | None = None, log: Log = print,
                 opset: int | None = None) -> EngineInfo:
    """Build (or take from the engine cache) the engine of one component into `out`; -> its
    manifest entry. `register_plugins` registers mnt::Warp / mnt::CrossAttention with
    TensorRT before the parser meets them (ops "plugins"). `opset`: the ONNX's default-domain
    opset (the manifest's), for the known-defect checks."""
    if settings.ops == "plugins" and register_plugins is None:
        raise ExportError(f"{info.name}: ops 'plugins' needs the kernel library's plugins")
    onnx_sha256 = sha256_file(onnx_path)
    profiles = profile_shapes(info, settings.opts)
    key = build_key(onnx_sha256, settings, target, plugin_library_sha256,
                    {"profiles": [{name: [list(s) for s in rows] for name, rows in profile.items()}
                                  for profile in profiles]})
    cached = engine_cache_path(key)
    if cached.is_file():
        log(f"{info.name}: engine taken from the cache ({cached})")
    else:
        if register_plugins is not None:
            register_plugins()
        started = time.perf_counter()
        label = RUNTIMES[target.runtime][1]
        gpus = ", ".join(f"sm_{cc.replace('.', '')}" for cc in target.compute_capability.split(","))
        log(f"{info.name}: building a {label} {target.tensorrt_version} engine for {gpus} ({settings.ops} "
            f"ops, profile {_describe_profile(info, settings.opts)}) ...")
        serialized = _compile(onnx_path, info, settings, target, profiles, log, opset)
        cached.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(cached) as temporary:
            temporary.write_bytes(serialized)
        log(f"{info.name}: engine built in {time.perf_counter() - started:.1f} s "
            f"({len(serialized) / 1e6:.1f} MB)")
    with atomic_path(out) as temporary:
        shutil.copyfile(cached, temporary)
    rtx = target.runtime == "tensorrt-rtx"
    return EngineInfo(file=out.name, sha256=sha256_file(out), tensorrt_version=target.tensorrt_version,
                      compute_capability="" if rtx else target.compute_capability,
                      plugin_library_sha256=plugin_library_sha256, build_key=key, ops=settings.ops,
                      runtime=target.runtime, compute_capabilities=settings.compute_capabilities)


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


def engines_or_skip(folder: Path, kernels: Path | None = None, log: Log = print,
                    settings: EngineSettings = EngineSettings()) -> str:
    """TensorRT engines: built when TensorRT and a GPU are here; -> the closing line (the
    one line saying they were skipped, why, and how to build them elsewhere). TensorRT-RTX
    engines are built on any machine, and a missing module is an error, not a skip."""
    if settings.runtime == "tensorrt-rtx":
        build_engines(folder, settings, kernels, log)
        return (f"TensorRT-RTX engines for compute capability {', '.join(settings.compute_capabilities)} "
                f"written to {folder}; run them on an RTX PC with `mnt-run --backend tensorrt-rtx "
                f"--artifacts {folder}`")
    reason = engines_unavailable()
    if reason:
        return skipped_line(folder, reason)
    build_engines(folder, settings, kernels, log)
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
    the manifest is rewritten (atomically) with the engine entries. Two builds into one
    folder exclude each other (the second stops at once): each would rewrite the manifest
    from the one it read, and lose the other's engines."""
    with exclusive(folder, ExportError):
        return _build_engines(folder, settings, kernels, log)


def _build_engines(folder: Path, settings: EngineSettings, kernels: Path | None, log: Log) -> Manifest:
    manifest = load_manifest(folder)
    rtx = settings.runtime == "tensorrt-rtx"
    if rtx and any(c.custom_ops for c in manifest.components.values()):
        raise ExportError(f"{folder} is a plugin variant (mnt:: nodes), which TensorRT-RTX cannot build",
                          hint="TensorRT-RTX's Python package has no plugin API (tensorrt_rtx.plugin does "
                               "not import): build the standard graphs, without --plugins, for it")
    target = current_target(settings)
    if rtx:
        log(f"TensorRT-RTX {target.tensorrt_version}, ahead of time for compute capability "
            f"{', '.join(settings.compute_capabilities)}")
    else:
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
        file = f"{name}.rtx.engine" if rtx else f"{name}.engine"
        engine = build_engine(folder / info.file, info, replace(settings, ops=ops), target,
                              folder / file, plugin_sha if plugins else None,
                              register if plugins else None, log, manifest.opset)
        components[name] = replace(info, engines={**info.engines, settings.runtime: engine})
    faces = {}  # the per-frame face networks (mediapipe's, converted): native layers, static shapes
    for name, info in manifest.faces.items():
        file = f"{name}.rtx.engine" if rtx else f"{name}.engine"
        engine = build_engine(folder / info.file, info, replace(settings, ops="native"), target,
                              folder / file, log=log, opset=manifest.opset)
        faces[name] = replace(info, engines={**info.engines, settings.runtime: engine})
    updated = replace(manifest, components=components, faces=faces,
                      versions={**manifest.versions, settings.runtime: target.tensorrt_version})
    updated.write(folder)
    return updated


def _describe_profile(info: ComponentInfo, opts: tuple[int, ...]) -> str:
    if len(info.dims) != 1:
        return ", ".join(f"{d} {lo}..{hi}" for d, (lo, hi) in info.dims.items()) or "static"
    (axis, (lo, hi)), = info.dims.items()
    return ", ".join(f"{axis} {a}..{b} (opt {o})" if a != b else f"{axis} {a}"
                     for a, o, b in axis_ranges(lo, hi, opts))


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


def version_tuple(version: str) -> tuple[int, ...]:
    """'10.14.1.48' -> (10, 14, 1, 48); stops at the first part that is not a number."""
    parts = []
    for part in version.split("."):
        if not part.isdigit():
            break
        parts.append(int(part))
    return tuple(parts)


def check_known_defects(info: ComponentInfo, target: BuildTarget, opset: int | None,
                        grid_sample_inputs: list[str], log: Log) -> None:
    """Stop a build that a known TensorRT defect would make wrong, warn where one may.
    `grid_sample_inputs`: the data type of each grid sample's input in the parsed network
    ("float", "half")."""
    if not grid_sample_inputs:
        return
    label = RUNTIMES[target.runtime][1]
    if opset is not None and opset >= GRID_SAMPLE_LINEAR_OPSET:
        raise ExportError(f"{info.name}: GridSample at opset {opset}, whose mode 'linear' {label}'s ONNX "
                          "parser reads as nearest (onnx/onnx-tensorrt PR 1060): the engine would be wrong",
                          hint="export at opset 18 or 19 (GridSample's mode 'bilinear'), as `mnt-export "
                               "build` does: rebuild the folder with it")
    defect = ".".join(map(str, FP32_ISLAND_GRID_SAMPLE_DEFECT))
    if (target.runtime == "tensorrt" and info.precision == "fp16" and "float" in grid_sample_inputs
            and version_tuple(target.tensorrt_version) >= FP32_ISLAND_GRID_SAMPLE_DEFECT):
        log(f"{info.name}: warning: TensorRT {target.tensorrt_version} (>= {defect}) computes a grid "
            "sample kept in FP32 inside an FP16 engine wrongly (pytorch/TensorRT 4074); check the "
            "engine against the goldens (mnt-export verify), or build the FP32 folder or with an older "
            "TensorRT")


def _grid_sample_inputs(network: Any, trt: Any) -> list[str]:
    """The input data type of every grid-sample layer of a parsed network."""
    found = []
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        if layer.type == trt.LayerType.GRID_SAMPLE:
            found.append("float" if layer.get_input(0).dtype == trt.DataType.FLOAT else "half")
    return found


def _compile(onnx_path: Path, info: ComponentInfo, settings: EngineSettings, target: BuildTarget,
             profiles: list[Profile], log: Log, opset: int | None = None) -> bytes:
    trt = _module(target.runtime)
    logger = _logger(trt)
    builder = trt.Builder(logger)
    flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    if settings.ops == "plugins":  # our plugins define only an AOT implementation; say so anyway
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.PREFER_AOT_PYTHON_PLUGINS)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    model = plugin_onnx_bytes(onnx_path) if settings.ops == "plugins" else onnx_path.read_bytes()
    if not parser.parse(model, str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        label = RUNTIMES[target.runtime][1]
        raise ExportError(f"{info.name}: {label}'s ONNX parser rejected {onnx_path.name}: {errors}")
    _check_network_io(network, info, trt)
    check_known_defects(info, target, opset, _grid_sample_inputs(network, trt), log)
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, settings.workspace_mib << 20)
    config.builder_optimization_level = settings.optimization_level
    config.clear_flag(trt.BuilderFlag.TF32)  # on by default: a silent FP32 -> TF32 lowering
    if target.runtime == "tensorrt-rtx":  # ahead of time, for GPUs that need not be here
        capabilities = settings.compute_capabilities
        config.num_compute_capabilities = len(capabilities)
        for i, cc in enumerate(capabilities):
            config.set_compute_capability(getattr(trt.ComputeCapability, "SM" + cc.replace(".", "")), i)
        # Without it TensorRT-RTX may allocate during inference, which a CUDA graph cannot hold.
        config.set_flag(trt.BuilderFlag.REQUIRE_USER_ALLOCATION)
    for profile in profiles:  # (the runtime picks the one whose range holds a call's shapes)
        optimisation = builder.create_optimization_profile()
        for name, (lo, opt, hi) in profile.items():
            optimisation.set_shape(name, trt.Dims(list(lo)), trt.Dims(list(opt)), trt.Dims(list(hi)))
        config.add_optimization_profile(optimisation)
    # TensorRT-RTX's ahead-of-time build times no tactics (no GPU needed), so it keeps no
    # timing cache: one it wrote fails to load again without a GPU.
    timing_path = timing_cache_path(target) if target.runtime == "tensorrt" else None
    # (the cache must live until the engine is built)
    timing = None if timing_path is None else attach_timing_cache(config, timing_path, info.name, log)
    monitor = _progress_monitor(info.name, log, trt)
    config.progress_monitor = monitor
    serialized = builder.build_serialized_network(network, config)
    del timing
    if serialized is None:
        why = logger.errors[-1] if logger.errors else "see its log above"
        if target.runtime == "tensorrt-rtx":
            hint = ("TensorRT-RTX cannot compile FP32 matrix products (the FP16 graphs' FP32 islands) "
                    "for Turing: leave 75 out of --compute-capabilities" if "Turing" in why
                    else "build the standard graphs (no --plugins) with fewer --compute-capabilities")
        else:
            hint = ("free GPU memory and rerun, or build from Python with more workspace or a lower "
                    "optimisation level: mnt.export.tensorrt.builder.build_engines(folder, "
                    "EngineSettings(workspace_mib=4096, optimization_level=1))")
        label = RUNTIMES[target.runtime][1]
        raise ExportError(f"{info.name}: {label} could not build an engine: {why}", hint=hint)
    if timing_path is not None:
        timing_path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(timing_path) as temporary:
            temporary.write_bytes(bytes(memoryview(config.get_timing_cache().serialize())))
    return bytes(memoryview(serialized))


def attach_timing_cache(config: Any, path: Path, component: str, log: Log) -> Any:
    """The timing cache read from `path` (empty if none), attached to the builder config;
    one that does not fit this GPU and TensorRT (set_timing_cache returns False) is
    replaced by an empty one. -> the cache (it must live until the engine is built)."""
    timing = config.create_timing_cache(path.read_bytes() if path.is_file() else b"")
    if config.set_timing_cache(timing, False):
        return timing
    log(f"{component}: the timing cache {path} does not fit this GPU and TensorRT; timing afresh "
        "(the file is replaced after the build)")
    timing = config.create_timing_cache(b"")
    if not config.set_timing_cache(timing, False):
        raise ExportError(f"{component}: TensorRT refused a new, empty timing cache",
                          hint=f"delete {path} and rebuild")
    return timing


def _logger(trt: Any) -> Any:
    """TensorRT's warnings and errors on stderr, as its own logger prints them, with the
    errors also kept, so that a failed build can say why in its one line."""
    import sys

    class Recorder(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.errors: list[str] = []

        def log(self, severity: Any, msg: str) -> None:
            if severity <= trt.ILogger.Severity.WARNING:
                print(f"[TRT] {msg}", file=sys.stderr)
            if severity <= trt.ILogger.Severity.ERROR:
                self.errors.append(" ".join(msg.split()))

    return Recorder()


def _module(runtime: str) -> Any:
    """The Python module that builds engines for `runtime`: TensorRT's and TensorRT-RTX's
    builder APIs are the same, so one code path serves both."""
    import importlib

    return importlib.import_module(RUNTIMES[runtime][0])


def _check_network_io(network: trt.INetworkDefinition, info: ComponentInfo, trt: Any) -> None:
    """The parsed network must have the manifest's inputs and outputs with its dtypes: the
    strongly typed build keeps them, and the runtime binds buffers by these names."""
    import numpy as np

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


def _progress_monitor(component: str, log: Log, trt: Any) -> Any:
    """Top-level build phases as progress lines (TensorRT calls this from its threads)."""

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
