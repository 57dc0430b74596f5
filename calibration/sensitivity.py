"""Which layers stay in higher precision: measured, per block, not guessed.

Every output is judged by its gate (gates.int8_gate); a graph's *slack* is the worst
output's PSNR minus its gate over the evaluation samples (positive: it passes), against
the FP32 graph's outputs. The search:

1. all blocks quantised: if it passes with `margin` dB to spare, nothing is kept;
2. else each block quantised alone (the rest FP32): its slack measures what quantising
   it costs; noise powers of independent blocks add, so a block's share of the allowed
   noise is 10^(-slack/10);
3. blocks are quantised cheapest first while the shares sum to at most 10^(-margin/10);
   the rest stay FP32;
4. that graph is measured; while it misses the gate by the margin, the costliest
   quantised block is handed back to FP32; if it passes, the next block is tried once.
5. (`Search.hand_back`, called by the build while the chosen graph misses the gate on
   held-back frames, which a few search samples cannot vouch for) the costliest block still
   INT8 is handed back too, its cost measured alone first where step 1 skipped that.

Cost: (blocks + 3) quantise-and-run trials on a few samples; ranges are calibrated once.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mnt.calibration.data import Feeds
from mnt.calibration.quantize import Group, quantize
from mnt.export.onnx.gates import Error, int8_gate
from mnt.runtime.backends.onnxruntime import session_options


@dataclass(frozen=True)
class Trial:
    quantized: tuple[str, ...]  # block names in INT8
    slack_db: float  # worst output's PSNR minus its gate
    psnr_db: dict[str, float]  # worst PSNR per output over the evaluation samples


@dataclass
class Plan:
    groups: list[Group]
    all_int8: Trial
    alone: dict[str, Trial] = field(default_factory=dict)  # block -> quantised alone
    final: Trial | None = None
    handed_back: dict[str, str] = field(default_factory=dict)  # block -> the held-back miss it fixed
    trials: int = 0
    seconds: float = 0.0

    def kept(self) -> list[str]:
        assert self.final is not None
        return [g.name for g in self.groups if g.name not in self.final.quantized]

    def excluded_nodes(self, quantized: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(n for g in self.groups if g.name not in quantized for n in g.nodes)

    def to_json(self) -> dict:
        assert self.final is not None
        return {
            "method": "per-block: each block quantised alone, its PSNR loss against FP32 on the "
                      "calibration frames; the costliest blocks stay FP32 until the gate passes, "
                      "on those frames and then on the held-back frames",
            "blocks": len(self.groups),
            "quantized_nodes": sum(len(g.nodes) for g in self.groups if g.name in self.final.quantized),
            "fp32_nodes": sum(len(g.nodes) for g in self.groups if g.name not in self.final.quantized),
            "all_int8": {"slack_db": _finite(self.all_int8.slack_db), "psnr_db": _dbs(self.all_int8)},
            "final": {"slack_db": _finite(self.final.slack_db), "psnr_db": _dbs(self.final)},
            "kept_in_higher_precision": [
                {"block": name, "precision": "fp32",
                 "nodes": list(next(g.nodes for g in self.groups if g.name == name)),
                 "psnr_db_when_quantized_alone": _dbs(self.alone[name]) if name in self.alone else None,
                 "why": _why(self.alone.get(name), self.handed_back.get(name))}
                for name in self.kept()],
            "quantized_blocks": {g.name: (_dbs(self.alone[g.name]) if g.name in self.alone else None)
                                 for g in self.groups if g.name in self.final.quantized},
            "handed_back_after_held_back_misses": list(self.handed_back),
            "trials": self.trials,
            "seconds": round(self.seconds, 1),
        }


def _finite(value: float) -> float | None:
    """JSON has no infinity: an output identical to FP32 (nothing quantised upstream) is None."""
    return round(value, 2) if math.isfinite(value) else None


def _dbs(trial: Trial) -> dict[str, float | None]:
    return {name: _finite(v) for name, v in trial.psnr_db.items()}


def _why(alone: Trial | None, held_back_miss: str | None = None) -> str:
    if alone is None:
        return "not measured"
    worst = min(alone.psnr_db, key=alone.psnr_db.__getitem__)
    why = (f"quantised alone it costs {worst} {alone.psnr_db[worst]:.1f} dB "
           f"({alone.slack_db:+.1f} dB against its gate)")
    if held_back_miss:
        why = f"handed back after the gate missed on held-back frames ({held_back_miss}); {why}"
    return why


def share(trial: Trial) -> float:
    """The fraction of the gate's allowed noise power this trial's INT8 blocks use."""
    return 10 ** (-trial.slack_db / 10)


class Evaluator:
    """Runs candidate graphs on fixed samples against the FP32 graph's outputs."""

    def __init__(self, fp32: Path, feeds: list[Feeds]) -> None:
        import onnxruntime as ort

        self.ort = ort
        self.feeds = feeds
        session = self._session(fp32)
        self.names = [o.name for o in session.get_outputs()]
        self.references = [[np.asarray(y, np.float64) for y in session.run(None, f)] for f in feeds]

    def _session(self, path: Path):
        # the runtime's options: INT8 products exact on every x86 CPU, as where it runs
        options = session_options(self.ort)
        return self.ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def __call__(self, path: Path, quantized: tuple[str, ...]) -> Trial:
        session = self._session(path)
        worst: dict[str, float] = {}
        for feeds, references in zip(self.feeds, self.references, strict=True):
            for name, got, ref in zip(self.names, session.run(None, feeds), references, strict=True):
                psnr = Error.between(np.asarray(got), ref).psnr_db
                worst[name] = min(worst.get(name, math.inf), psnr)
        slack = min(psnr - int8_gate(name) for name, psnr in worst.items())
        return Trial(quantized, slack, {n: round(v, 2) for n, v in worst.items()})


class Search:
    """The search for one component (`run`, steps 1-4), continued by `hand_back` (step 5)."""

    def __init__(self, fp32: Path, out: Path, groups: list[Group], calibration: list[Feeds],
                 evaluation: list[Feeds], cache: Path, margin_db: float = 0.5,
                 log: Callable[[str], None] = print) -> None:
        self.fp32, self.out, self.cache, self.calibration = fp32, out, cache, calibration
        self.margin_db, self.log = margin_db, log
        self.evaluate = Evaluator(fp32, evaluation)
        self.plan = Plan(groups, all_int8=Trial((), math.nan, {}))

    def trial(self, quantized: tuple[str, ...]) -> Trial:
        """Quantise `quantized` (the rest FP32) into `out` and measure it."""
        self._write(quantized)
        self.plan.trials += 1
        return self.evaluate(self.out, quantized)

    def run(self) -> Plan:
        """Find the blocks to keep in FP32 and write the chosen INT8 graph to `out`."""
        started = time.perf_counter()
        plan, margin_db = self.plan, self.margin_db
        names = tuple(g.name for g in plan.groups)
        plan.all_int8 = self.trial(names)
        self.log(f"  all {len(plan.groups)} blocks INT8: " + _psnr(plan.all_int8))
        if plan.all_int8.slack_db >= margin_db or not plan.groups:
            plan.final = plan.all_int8
        else:
            self._measure_alone(names)
            ranked = sorted(names, key=lambda n: plan.alone[n].slack_db, reverse=True)  # cheapest first
            chosen: list[str] = []
            budget = 10 ** (-margin_db / 10)
            for name in ranked:
                if sum(share(plan.alone[n]) for n in (*chosen, name)) > budget:
                    break
                chosen.append(name)
            current = self.trial(tuple(chosen))
            handed_back = False
            while current.slack_db < margin_db and chosen:
                chosen.pop()  # the costliest block still in INT8 goes back to FP32
                handed_back = True
                current = self.trial(tuple(chosen))
            if not handed_back and len(chosen) < len(ranked):
                bolder = self.trial((*chosen, ranked[len(chosen)]))
                if bolder.slack_db >= margin_db:
                    current = bolder
            plan.final = current
            # the file on disk must be the chosen graph, whichever trial ran last
            self._write(current.quantized)
        plan.seconds = time.perf_counter() - started
        self.log(f"  chosen: {self._summary()} ({plan.trials} trials, {plan.seconds:.0f} s)")
        return plan

    def hand_back(self, miss: str) -> str | None:
        """The chosen graph missed the gate on held-back frames (`miss` says how): keep its
        costliest INT8 block in FP32 too and write that graph to `out`; -> the block, or None
        when it is the last one (INT8 does not fit this component: the caller keeps it FP32)."""
        plan = self.plan
        assert plan.final is not None
        if len(plan.final.quantized) <= 1:
            return None
        started = time.perf_counter()
        self._measure_alone(plan.final.quantized)  # the order the search would have used
        block = min(plan.final.quantized, key=lambda n: plan.alone[n].slack_db)
        plan.final = self.trial(tuple(n for n in plan.final.quantized if n != block))
        plan.handed_back[block] = miss
        plan.seconds += time.perf_counter() - started
        self.log(f"  {block} back to FP32 too: {self._summary()}")
        return block

    def _measure_alone(self, names: tuple[str, ...]) -> None:
        """Each block's cost quantised alone (overwrites `out`)."""
        for name in names:
            if name not in self.plan.alone:
                self.plan.alone[name] = self.trial((name,))

    def _write(self, quantized: tuple[str, ...]) -> None:
        quantize(self.fp32, self.out, self.cache, self.plan.excluded_nodes(quantized), self.calibration)

    def _summary(self) -> str:
        plan = self.plan
        assert plan.final is not None
        return (f"{len(plan.final.quantized)} of {len(plan.groups)} blocks INT8, kept FP32: "
                f"{', '.join(plan.kept()) or 'none'}; " + _psnr(plan.final))


def _psnr(trial: Trial) -> str:
    return ", ".join(f"{n} {v:.1f} dB" for n, v in sorted(trial.psnr_db.items(),
                                                          key=lambda kv: kv[1])[:3]) \
        + f" (slack {trial.slack_db:+.1f} dB)"
