"""prunekit against Torch-Pruning on torchvision classifiers: parameters kept, time, failures.

Issue 10 ("compact on every traceable model"). Every model is built with
``weights=None`` under ``torch.manual_seed(0)`` and put in eval mode; its BatchNorms get
non-trivial statistics and affine (so a removed channel carries a BatchNorm shift and the
output check means something) and ViT's zero-initialised head gets random weights. Input
1x3x224x224. Both tools remove 40% of the channels of every coupled group, chosen by L1
magnitude, with the classifier's output channels (the classes) kept:

* prunekit: ``pk.prune(m, 0.4, criterion="magnitude", granularity="channel",
  scope="layer", reduction="l1", example_inputs=x, exclude=[classifier weight])`` (one
  decision per group: :func:`prunekit.structured.groups.prune_groups`), then ``pk.compact(m, x)``,
  which checks its result against ``zero_removed_channels(m, x)`` on ``x`` (included in
  the time);
* Torch-Pruning (``torch-pruning``, optional: without it the script runs prunekit only):
  ``tp.pruner.MetaPruner(m, x, importance=MagnitudeImportance(p=1), pruning_ratio=0.4,
  global_pruning=False, ignored_layers=[classifier])``, then ``pruner.step()``. For
  ViT, ``num_heads={MultiheadAttention: num_heads}`` (head dims pruned, heads kept) and
  ``model.hidden_dim`` set to the pruned width afterwards, as Torch-Pruning's
  torchvision benchmark does. Torch-Pruning does not check its result; the script runs
  the pruned model once on ``x`` (not timed) and reports a failure there.

Models: the 11 of the issue plus ``resnext50_32x4d`` (grouped 3x3 convs, 32 groups of
width 4: the grouped-conv rules at a larger scale and a smaller group width than
RegNet's 8). ``mobilenet_v3_small`` stands for the MobileNetV3 family.

Columns: the fraction of the parameters kept (compacted / dense), seconds (one run,
``torch.set_num_threads(--threads)``, default 1; the model copy is not timed), and for
prunekit the largest output difference between the compacted model and its masked
reference (``zero_removed_channels``), relative to the reference's largest output
(compact already refuses more than 1e-4; measured again outside the timing). A failure
prints ``fails: <exception>``.

    python benchmarks/bench_torch_pruning.py [--models resnet18,vit_b_16] [--threads 1]
                                            [--ratio 0.4] [--size 224] [--profile]

``--profile`` runs prunekit under ``cProfile`` and prints, per model, where its time goes
(tracing, planning, scoring, masking, copying, shrinking, the checking forward passes).
"""

from __future__ import annotations

import argparse
import copy
import cProfile
import importlib.metadata
import pstats
import time
import traceback

import torch
import torchvision
from torch import nn

import prunekit as pk
from prunekit.structured.compact import zero_removed_channels

try:
    import torch_pruning as tp
except ImportError:  # optional: the script still runs prunekit alone
    tp = None

#: model -> its classifier (the classes stay: excluded from pruning by both tools)
MODELS = {
    "resnet18": "fc",
    "resnet50": "fc",
    "vgg11_bn": "classifier.6",
    "mobilenet_v2": "classifier.1",
    "mobilenet_v3_small": "classifier.3",
    "efficientnet_b0": "classifier.1",
    "densenet121": "classifier",
    "shufflenet_v2_x1_0": "fc",
    "regnet_y_400mf": "fc",
    "convnext_tiny": "classifier.2",
    "vit_b_16": "heads.head",
    "resnext50_32x4d": "fc",
}


def build(name: str) -> nn.Module:
    torch.manual_seed(0)
    model = getattr(torchvision.models, name)(weights=None).eval()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.copy_(0.1 * torch.randn(m.num_features, generator=g))
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(1 + 0.1 * torch.randn(m.num_features, generator=g))
                m.bias.copy_(0.1 * torch.randn(m.num_features, generator=g))
        head = model.get_submodule(MODELS[name])
        if not head.weight.any():  # ViT's head starts at zero: every output would be 0
            head.weight.normal_(0, 0.02, generator=g)
    return model


def n_params(model: nn.Module) -> int:
    """Parameters of a plain or a compacted model (a masked one counts ``weight_orig``)."""
    return sum(p.numel() for p in model.parameters())


def short(e: BaseException, width: int = 90) -> str:
    msg = " ".join(str(e).split())
    msg = f"{type(e).__name__}: {msg}"
    return msg if len(msg) <= width else msg[:width - 3] + "..."


def run_prunekit(model: nn.Module, classifier: str, x: torch.Tensor, ratio: float) -> dict:
    masked = copy.deepcopy(model)
    try:
        t0 = time.perf_counter()
        pk.prune(masked, ratio, criterion="magnitude", granularity="channel", scope="layer", reduction="l1",
                 example_inputs=x, exclude=[f"{classifier}.weight"])
        t1 = time.perf_counter()
        small = pk.compact(masked, x)
        t2 = time.perf_counter()
    except Exception as e:  # noqa: BLE001 - reported in the table
        return {"error": short(e), "trace": traceback.format_exc()}
    with torch.no_grad():
        ref = zero_removed_channels(masked, x)(x)
        out = small(x)
    rel = float((out - ref).abs().max()) / max(float(ref.abs().max()), 1e-12)
    return {"kept": n_params(small) / n_params(model), "seconds": t2 - t0, "prune_s": t1 - t0,
            "compact_s": t2 - t1, "rel_diff": rel}


def run_torch_pruning(model: nn.Module, classifier: str, x: torch.Tensor, ratio: float) -> dict:
    if tp is None:
        return {"error": "torch_pruning not installed"}
    work = copy.deepcopy(model)
    kwargs = {}
    vit = isinstance(work, torchvision.models.VisionTransformer)
    if vit:  # prune head dims (all heads keep the same width), keep the head count
        kwargs["num_heads"] = {m: m.num_heads for m in work.modules() if isinstance(m, nn.MultiheadAttention)}
    try:
        t0 = time.perf_counter()
        pruner = tp.pruner.MetaPruner(work, x, importance=tp.importance.MagnitudeImportance(p=1),
                                      pruning_ratio=ratio, global_pruning=False,
                                      ignored_layers=[work.get_submodule(classifier)], **kwargs)
        pruner.step()
        t1 = time.perf_counter()
        if vit:  # torchvision's ViT reshapes with its stored width
            work.hidden_dim = work.conv_proj.out_channels
        with torch.no_grad():
            out = work(x)
        assert out.shape == (x.shape[0], 1000), f"output shape {tuple(out.shape)}"
    except Exception as e:  # noqa: BLE001
        return {"error": short(e), "trace": traceback.format_exc()}
    return {"kept": n_params(work) / n_params(model), "seconds": t1 - t0}


def _phases(model: nn.Module) -> list[tuple[str, object]]:
    """Profile rows: (label, function whose cumulative time is reported). Indented rows are
    inside the row above; the last rows cut across prune and compact."""
    from torch.fx.passes.shape_prop import ShapeProp

    from prunekit import allocation, pipeline
    from prunekit.core import guards, masks
    from prunekit.core.graph import channels, trace, tracer
    from prunekit.structured import groups
    compact = importlib.import_module("prunekit.structured.compact")   # the module, not the function
    return [
        ("pk.prune (coupled: prune_groups)", pipeline.prune),
        ("  plan_channels (trace + walk + vote)", channels.plan_channels),
        ("  scoring (criterion)", pk.criteria.score),
        ("  group scores (_units)", groups._units),
        ("  allocation (allocate_units)", allocation.allocate_units),
        ("  apply_masks", masks.apply_masks),
        ("pk.compact", compact.compact),
        ("  copy_model (fold=True)", masks.copy_model),
        ("  _zero", compact._zero),
        ("  _shrink", compact._shrink),
        ("  verify: reference + result forward (_run)", compact._run),
        ("both: _plan (walk + vote; prune's and compact's)", channels._plan),
        ("both: trace (cached fx trace + ShapeProp)", trace.trace),
        ("both:   fx.symbolic_trace", torch.fx.symbolic_trace),
        ("both:   ShapeProp forward", ShapeProp.propagate),
        ("both: channel walk (ChannelTracer.run)", tracer.ChannelTracer.run),
        ("both: read_only snapshot + restore (preserved)", guards.preserved.__wrapped__),
        ("both: model.forward (eager ones + fx's symbolic calls)", type(model).forward),
    ]


def profile_prunekit(model: nn.Module, classifier: str, x: torch.Tensor, ratio: float) -> None:
    masked = copy.deepcopy(model)
    rows = _phases(model)
    prof = cProfile.Profile()
    prof.enable()
    t0 = time.perf_counter()
    try:
        pk.prune(masked, ratio, criterion="magnitude", granularity="channel", scope="layer", reduction="l1",
                 example_inputs=x, exclude=[f"{classifier}.weight"])
        pk.compact(masked, x)
    except Exception as e:  # noqa: BLE001
        print(f"  (fails: {short(e)})")
    total = time.perf_counter() - t0
    prof.disable()
    stats = pstats.Stats(prof).stats  # (file, line, name) -> (primitive calls, calls, tottime, cumtime, callers)
    print(f"  total {total:.2f} s (under cProfile, which slows Python-heavy parts)")
    for label, fn in rows:
        code = getattr(fn, "__code__", None)
        key = (code.co_filename, code.co_firstlineno, code.co_name) if code is not None else None
        cc, _, _, ct, _ = stats.get(key, (0, 0, 0.0, 0.0, {}))
        print(f"  {label:<56} {ct:6.2f} s {ct / total:6.1%}  ({cc} calls)")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join(MODELS),
                    help=f"comma-separated, from: {', '.join(MODELS)}")
    ap.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (default 1)")
    ap.add_argument("--ratio", type=float, default=0.4, help="fraction of channels removed per group (0.4)")
    ap.add_argument("--size", type=int, default=224, help="input height and width (ViT needs 224)")
    ap.add_argument("--profile", action="store_true", help="profile prunekit's phases per model instead")
    ap.add_argument("--tracebacks", action="store_true", help="print the full traceback of every failure")
    args = ap.parse_args(argv)
    names = [n.strip() for n in args.models.split(",") if n.strip()]
    unknown = [n for n in names if n not in MODELS]
    if unknown:
        ap.error(f"--models: unknown {unknown}; choose from {list(MODELS)}")
    torch.set_num_threads(args.threads)
    x = torch.randn(1, 3, args.size, args.size, generator=torch.Generator().manual_seed(2))
    tp_version = None
    if tp is not None:  # the distribution's version (torch_pruning.__version__ of 1.6.1 says 1.6.0)
        try:
            tp_version = importlib.metadata.version("torch-pruning")
        except importlib.metadata.PackageNotFoundError:
            tp_version = getattr(tp, "__version__", "?")
    print(f"torch {torch.__version__}, torchvision {torchvision.__version__}, prunekit {pk.__version__}, "
          f"torch-pruning {tp_version or 'not installed'}; {args.threads} thread(s), input {tuple(x.shape)}, "
          f"{args.ratio:.0%} of the channels per group, L1 magnitude, classifier kept; one run each")

    if args.profile:
        for name in names:
            print(f"\n{name}")
            profile_prunekit(build(name), MODELS[name], x, args.ratio)
        return

    rows = []
    for name in names:
        model = build(name)
        ours = run_prunekit(model, MODELS[name], x, args.ratio)
        theirs = run_torch_pruning(model, MODELS[name], x, args.ratio)
        rows.append((name, n_params(model), ours, theirs))
        for who, r in (("prunekit", ours), ("Torch-Pruning", theirs)):
            if "error" in r and args.tracebacks and "trace" in r:
                print(f"--- {name}, {who}:\n{r['trace']}")
        print(f"done {name}", flush=True)

    def kept(r: dict) -> str:
        return f"fails: {r['error']}" if "error" in r else f"{r['kept']:.3f}"

    def secs(r: dict) -> str:
        return "" if "error" in r else f"{r['seconds']:.2f}"

    print("\n| model | dense params | prunekit kept | prunekit s (prune + compact) | max rel. diff vs masked ref. "
          "| Torch-Pruning kept | Torch-Pruning s |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, dense, ours, theirs in rows:
        split = "" if "error" in ours else f" ({ours['prune_s']:.2f} + {ours['compact_s']:.2f})"
        diff = "" if "error" in ours else f"{ours['rel_diff']:.1e}"
        print(f"| {name} | {dense / 1e6:.1f} M | {kept(ours)} | {secs(ours)}{split} | {diff} "
              f"| {kept(theirs)} | {secs(theirs)} |")
    ok_o = [r for _, _, r, _ in rows if "error" not in r]
    ok_t = [r for _, _, _, r in rows if "error" not in r]
    both = [(o, t) for _, _, o, t in rows if "error" not in o and "error" not in t]
    print(f"\nsucceeded: prunekit {len(ok_o)}/{len(rows)}, Torch-Pruning {len(ok_t)}/{len(rows)}")
    print(f"total seconds: prunekit {sum(r['seconds'] for r in ok_o):.1f} "
          f"(prune {sum(r['prune_s'] for r in ok_o):.1f}, compact {sum(r['compact_s'] for r in ok_o):.1f}), "
          f"Torch-Pruning {sum(r['seconds'] for r in ok_t):.1f}")
    if both:
        print(f"on the {len(both)} models both handle: prunekit {sum(o['seconds'] for o, _ in both):.1f} s, "
              f"Torch-Pruning {sum(t['seconds'] for _, t in both):.1f} s; mean fraction kept prunekit "
              f"{sum(o['kept'] for o, _ in both) / len(both):.3f}, Torch-Pruning "
              f"{sum(t['kept'] for _, t in both) / len(both):.3f}")


if __name__ == "__main__":
    main()
