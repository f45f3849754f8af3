"""What to measure: parameters, non-zeros, MACs, size and latency.

These numbers disagree on purpose: unstructured pruning cuts non-zeros and *effective*
MACs (the multiply-accumulates with a non-zero weight) but not the dense MACs a normal
kernel executes, nor the latency; structured pruning cuts all of them. Blalock et al.
(2020) ask every paper to report several of them; so does this table.

* MACs are counted with :class:`torch.utils.flop_counter.FlopCounterMode` on one forward
  pass (1 MAC = 2 FLOPs for convolutions and matrix products). Effective MACs of a
  Conv/Linear layer = dense MACs x (non-zero weights / weights): exact for unstructured
  sparsity with a kernel that skips zeros, which a dense kernel does not do.
* Size: bytes of all parameters and buffers stored densely (masks excluded, as after
  :func:`prunekit.remove_masks`), and the sparse size if each pruned tensor is stored as
  its non-zero values plus a 1-bit-per-weight bitmap.
* Latency: :class:`torch.utils.benchmark.Timer`, median and interquartile range.
  :func:`compare_latency` times several models in interleaved rounds (a busy machine
  slows them alike), and :func:`timing_claim` re-measures before it calls a comparison
  false, so a claim such as "the compacted model is faster" holds on a loaded laptop.
"""

from __future__ import annotations

import logging
import math
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

from ._validate import check_int, check_model, check_positive
from .core.guards import example_inputs_fit, preserved, read_only
from .core.targets import PRUNABLE_TYPES, all_parameters

__all__ = ["LayerStats", "Summary", "Timing", "compare_latency", "count_macs", "count_nonzeros", "count_params",
           "latency", "layer_sparsity", "summary", "timing_claim"]


@dataclass(frozen=True)
class LayerStats:
    name: str
    kind: str
    params: int
    nonzeros: int
    macs: int
    effective_macs: int

    @property
    def sparsity(self) -> float:
        return 1.0 - self.nonzeros / self.params if self.params else 0.0


@dataclass
class Summary:
    """Per-layer and total counts for a model; ``print(summary)`` shows a table."""

    layers: list[LayerStats]
    params: int
    nonzeros: int
    macs: int
    effective_macs: int
    size_bytes: int
    sparse_size_bytes: int
    extra: dict = field(default_factory=dict)

    @property
    def sparsity(self) -> float:
        return 1.0 - self.nonzeros / self.params if self.params else 0.0

    def table(self) -> str:
        name_w = max([len("layer")] + [len(r.name) for r in self.layers]) + 2
        kind_w = max([len("type")] + [len(r.kind) for r in self.layers]) + 2
        num_w = max(10, len(f"{self.macs:,}") + 2)
        head = (f"{'layer':<{name_w}}{'type':<{kind_w}}{'params':>{num_w}}{'nonzeros':>{num_w}}"
                f"{'sparsity':>9}{'MACs':>{num_w}}{'eff. MACs':>{num_w + 1}}")
        lines = [head, "-" * len(head)]
        for r in self.layers:
            lines.append(f"{r.name:<{name_w}}{r.kind:<{kind_w}}{r.params:>{num_w},}{r.nonzeros:>{num_w},}"
                         f"{r.sparsity:>9.1%}{r.macs:>{num_w},}{r.effective_macs:>{num_w + 1},}")
        lines.append("-" * len(head))
        lines.append(f"{'total':<{name_w + kind_w}}{self.params:>{num_w},}{self.nonzeros:>{num_w},}"
                     f"{self.sparsity:>9.1%}{self.macs:>{num_w},}{self.effective_macs:>{num_w + 1},}")
        lines.append(f"size: {self.size_bytes:,} bytes dense, {self.sparse_size_bytes:,} bytes sparse "
                     f"(non-zero values + 1-bit mask)")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()

    def _repr_pretty_(self, p, cycle) -> None:  # IPython display
        p.text(self.table())


def count_params(model: nn.Module) -> int:
    """Number of parameters (a masked ``weight`` counts once)."""
    return sum(t.parameter.numel() for t in all_parameters(model).values())


def count_nonzeros(model: nn.Module) -> int:
    """Number of non-zero effective parameters (``orig * mask`` for masked ones)."""
    return sum(int(torch.count_nonzero(t.tensor.detach())) for t in all_parameters(model).values())


def layer_sparsity(model: nn.Module) -> dict[str, float]:
    """Fraction of zeros in each Linear/Conv weight, by parameter name."""
    return {n: 1.0 - int(torch.count_nonzero(t.tensor.detach())) / t.parameter.numel()
            for n, t in all_parameters(model).items()
            if any(isinstance(u.module, PRUNABLE_TYPES) and u.attr == "weight" for u in t.uses)}


def _cpu_attention_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    """FLOPs of the CPU flash-attention kernel: the same two matrix products as the other SDPA kernels."""
    return sdpa_flop_count(query_shape, key_shape, value_shape)


#: Kernels ``torch.utils.flop_counter`` has no formula for (scaled-dot-product attention on CPU).
_EXTRA_FLOP_FORMULAS = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _cpu_attention_flops}


def count_macs(model: nn.Module, example_inputs) -> tuple[int, dict[str, int]]:
    """Dense MACs of one forward pass: (total, {module_name: MACs}) for modules with MACs.

    The pass runs in eval mode and leaves the model exactly as it was (BatchNorm statistics,
    buffers, train/eval mode); ``example_inputs`` that the model does not accept raise a
    ``ValueError``.
    """
    args = example_inputs if isinstance(example_inputs, tuple) else (example_inputs,)
    counter = FlopCounterMode(display=False, custom_mapping=_EXTRA_FLOP_FORMULAS)
    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)  # its fused kernel hides nn.MultiheadAttention from the counter
    try:
        with read_only(model), example_inputs_fit(model, example_inputs), counter:
            model(*args)
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)
    counts = counter.get_flop_counts()
    total = sum(counts.get("Global", {}).values()) // 2
    per_module: dict[str, int] = {}
    root = type(model).__name__
    for key, ops in counts.items():
        if key == "Global" or key == root:
            continue
        name = key[len(root) + 1:] if key.startswith(root + ".") else key
        per_module[name] = sum(ops.values()) // 2
    return total, per_module


def summary(model: nn.Module, example_inputs) -> Summary:
    """Per-layer params, non-zeros, sparsity, dense and effective MACs; model size.

    ``example_inputs`` is a tensor (or a tuple of tensors) for one forward pass; the
    batch size scales the MACs, so pass a single example to get per-sample MACs. The
    pass runs in eval mode and the model is left exactly as it was.
    """
    check_model(model)
    if not isinstance(example_inputs, (torch.Tensor, tuple)):
        raise TypeError(f"example_inputs must be a tensor or a tuple of tensors, got {type(example_inputs).__name__}")
    total_macs, per_module = count_macs(model, example_inputs)
    params = all_parameters(model)
    # one row per module that holds or uses a parameter; a shared (tied) parameter is
    # counted in the row of its first use only, but every module using it gets its MACs
    by_module: dict[str, tuple[nn.Module, list]] = {}
    for t in params.values():
        for i, use in enumerate(t.uses):
            mod_name = use.name.rsplit(".", 1)[0] if "." in use.name else ""
            row = by_module.setdefault(mod_name, (use.module, []))
            if i == 0:
                row[1].append(t)

    layers, saved = [], 0
    for mod_name, (module, ts) in by_module.items():
        n = sum(t.parameter.numel() for t in ts)
        nz = sum(int(torch.count_nonzero(t.tensor.detach())) for t in ts)
        macs = per_module.get(mod_name, 0)
        eff = macs
        if isinstance(module, PRUNABLE_TYPES):
            w = module.weight.detach()
            eff = round(macs * int(torch.count_nonzero(w)) / w.numel())
        saved += macs - eff
        layers.append(LayerStats(mod_name or "(root)", type(module).__name__, n, nz, macs, eff))

    size = sparse = 0
    for t in params.values():
        dense_b = t.parameter.numel() * t.parameter.element_size()
        nz = int(torch.count_nonzero(t.tensor.detach()))
        size += dense_b
        sparse += min(dense_b, nz * t.parameter.element_size() + math.ceil(t.parameter.numel() / 8))
    for bname, b in model.named_buffers():
        if bname.endswith("_mask"):
            continue
        size += b.numel() * b.element_size()
        sparse += b.numel() * b.element_size()
    return Summary(layers, sum(r.params for r in layers), sum(r.nonzeros for r in layers),
                   total_macs, total_macs - saved, size, sparse)


@dataclass(frozen=True)
class Timing:
    """Latency of a forward pass in seconds: median and interquartile range."""

    median: float
    iqr: float
    runs: int
    threads: int

    def __str__(self) -> str:
        return f"{self.median * 1e3:.3f} ms (IQR {self.iqr * 1e3:.3f} ms, {self.runs} runs, {self.threads} thread(s))"


def latency(model: nn.Module, example_inputs, *, threads: int = 1, min_run_time: float = 0.5) -> Timing:
    """Time ``model(example_inputs)`` under ``no_grad`` with :mod:`torch.utils.benchmark`.

    The model is used as it is (call ``model.eval()`` first for inference numbers); what
    the timed passes change in it (BatchNorm statistics in train mode, buffers) is restored.
    ``TypeError`` for a ``threads`` that is not an int or a ``min_run_time`` that is not a
    number, ``ValueError`` for one that is not positive. No global setting is left changed
    (the level of the ``torch.utils.cpp_extension`` logger is quieted during the import of
    :mod:`torch.utils.benchmark` only).
    """
    if not callable(model):
        raise TypeError(f"model must be an nn.Module or a callable, got {type(model).__name__}")
    check_int("threads", threads, 1)
    check_positive("min_run_time", min_run_time)
    # torch.utils.benchmark imports cpp_extension, which logs a CUDA warning on CPU-only
    # machines: quiet that logger during the import only, then restore the user's level
    noisy = logging.getLogger("torch.utils.cpp_extension")
    level = noisy.level
    noisy.setLevel(logging.ERROR)
    try:
        from torch.utils import benchmark
    finally:
        noisy.setLevel(level)

    args = example_inputs if isinstance(example_inputs, tuple) else (example_inputs,)
    timer = benchmark.Timer(
        stmt="with torch.no_grad(): model(*args)",
        globals={"model": model, "args": args, "torch": torch},
        num_threads=threads,
    )
    with preserved(model) if isinstance(model, nn.Module) else nullcontext():
        m = timer.blocked_autorange(min_run_time=min_run_time)
    return Timing(m.median, m.iqr, len(m.times), threads)


def compare_latency(candidates: Mapping[str, Callable], example_inputs, *, rounds: int = 3,
                    threads: int = 1, min_run_time: float = 0.2,
                    progress: bool = False) -> dict[str, Timing]:
    """Time several models (or callables) in ``rounds`` interleaved rounds.

    Each round times every candidate once with :func:`latency`; each candidate keeps its
    least disturbed round (the lowest median). Interleaving means a burst of load from
    another process slows every candidate of a round alike, so the *ratios* between them
    survive a busy machine far better than two separate measurements do.

    ``example_inputs`` is one input (or tuple of inputs) for all candidates, or a mapping
    with one entry per candidate name (e.g. channels-last tensors for some of them).

    >>> import torch, torch.nn as nn
    >>> t = compare_latency({"small": nn.Linear(4, 4), "big": nn.Linear(4, 256)},
    ...                     torch.zeros(8, 4), rounds=1, min_run_time=0.01)
    >>> sorted(t)
    ['big', 'small']
    """
    if not isinstance(candidates, Mapping) or not candidates:
        raise TypeError("candidates must be a non-empty mapping {name: model or callable}, "
                        f"got {type(candidates).__name__}")
    for name, fn in candidates.items():
        if not callable(fn):
            raise TypeError(f"candidates[{name!r}] must be callable, got {type(fn).__name__}")
    check_int("rounds", rounds, 1)
    if isinstance(example_inputs, Mapping):
        missing = sorted(set(candidates) - set(example_inputs))
        if missing:
            raise ValueError(f"example_inputs has no entry for {missing}")
        inputs_of = dict(example_inputs)
    else:
        inputs_of = {name: example_inputs for name in candidates}
    best: dict[str, Timing] = {}
    iterator = range(rounds)
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(iterator, desc=f"timing, {rounds} interleaved rounds")
    for _ in iterator:
        for name, fn in candidates.items():
            t = latency(fn, inputs_of[name], threads=threads, min_run_time=min_run_time)
            if name not in best or t.median < best[name].median:
                best[name] = t
    return best


def timing_claim(measure: Callable[[], Any], claim: Callable[[Any], bool], *,
                 attempts: int = 3, first: Any = None) -> tuple[bool, Any]:
    """Check a claim about timings, re-measuring when it fails, up to ``attempts`` times.

    ``measure()`` returns timings (e.g. from :func:`compare_latency`); ``claim(timings)``
    says whether the claim holds for them. A failure on a shared machine is often a burst
    of load, not a fact, so the claim is only called false when every attempt says so.
    Returns ``(held, timings)`` with the timings of the last attempt. State claims with a
    wide margin (e.g. "faster", not "1.9x faster"): they must also hold under 2x load.
    ``first``: timings already measured (e.g. those a page shows); they are checked as the
    first attempt, so nothing is re-timed when the claim holds for them.

    >>> held, _ = timing_claim(lambda: {"a": 1.0, "b": 2.0}, lambda t: t["a"] < t["b"])
    >>> held
    True
    """
    if not callable(measure) or not callable(claim):
        raise TypeError("measure and claim must be callables")
    if isinstance(attempts, bool) or not isinstance(attempts, int) or attempts < 1:
        raise ValueError(f"attempts must be a positive int, got {attempts!r}")
    timings = None
    for attempt in range(attempts):
        timings = first if attempt == 0 and first is not None else measure()
        if claim(timings):
            return True, timings
    return False, timings
