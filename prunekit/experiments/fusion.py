"""The experiments behind the book's chapter "Fusion", seeded and cached.

Everything runs on scikit-learn's 8x8 digits (:func:`prunekit.data.digits`) with the zoo's
small CNN (``zoo.load("cnn-digits")``, 28,218 parameters), on a CPU:

* ``deep_compression`` -- Han et al. (2016) end to end: global magnitude pruning ->
  fine-tuning -> k-means weight sharing (8 bits conv, 5 bits fc) -> centroid fine-tuning ->
  Huffman coding; accuracy and bits after each stage (relative indices of 8 / 5 bits);
* ``order`` -- prune-then-share against share-then-prune at the same sparsity and bits,
  without fine-tuning, on the trained CNN;
* ``int8`` -- static post-training int8 quantization (:func:`prunekit.fusion.quantize_int8`)
  of the dense CNN and of a channel-pruned, compacted, fine-tuned copy: bytes and accuracy
  (latency is measured live by the notebook, never cached);
* ``kd`` -- fine-tuning a pruned copy with the dense model as teacher (Hinton et al. 2015's
  loss) against plain cross-entropy, the same steps, optimizer and batches;
* ``decomposition`` -- Tucker-2 of the two large convolutions and truncated SVD of the
  hidden Linear against layer-wise magnitude pruning at the same parameter count, and
  LoSparse's low-rank + sparse start on the Linear layers;
* ``nas`` -- EagleEye's width search (Li et al. 2020) against uniform widths at the same MAC
  budget, both fine-tuned for the same steps.

``python -m prunekit.experiments.fusion`` recomputes all of it and writes
``prunekit/experiments/results/fusion.json`` (the file the book loads); ``--quick`` runs a
tiny configuration (a smoke test). Each function takes the configuration and returns
plain JSON-able numbers, so a notebook can recompute one case live and compare.
"""

from __future__ import annotations

import copy
import itertools
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

import prunekit as pk
from prunekit import data, train, zoo
from prunekit.fusion import (
    adaptive_bn,
    centroid_step,
    compression_report,
    eagleeye_search,
    kd_loss,
    low_rank,
    low_rank_plus_sparse,
    quantize_int8,
    rank_for_budget,
    relative_indices,
    share_model_weights,
    shared_to_dense,
    state_dict_bytes,
    tucker2,
)
from prunekit.methods import amc_search, metapruning_search
from prunekit.methods.learned.search_space import SearchSpace

from . import cli, load_results

__all__ = ["CONFIG", "QUICK", "RESULTS", "deep_compression", "order", "int8", "kd_finetune", "l1_channels",
           "kd", "decomposition", "decompose", "tucker_ranks", "nas", "load", "main", "run",
           "pruned_bits", "bits_of"]

RESULTS: Path = Path(__file__).resolve().parent / "results" / "fusion.json"

CONFIG: dict[str, Any] = {
    "seeds": [0, 1, 2],
    # Deep Compression
    "dc_sparsity": 0.9,
    "dc_finetune_steps": 300,
    "dc_bits": {"conv": 8, "fc": 5},          # weight bits = relative-index bits (paper)
    "dc_centroid_steps": 300,
    "dc_centroid_lr": 1e-3,
    # order of pruning and weight sharing
    "order_bits": [2, 3, 4, 5],
    "order_sparsity": [0.3, 0.5, 0.7],
    # int8
    "int8_channel_ratio": 0.5,
    "int8_finetune_steps": 300,
    "int8_calibration_batches": 8,
    # distillation
    "kd_sparsity": [0.5, 0.8, 0.9, 0.95],
    "kd_steps": 100,
    "kd_lr": 1e-3,
    "kd_temperature": 4.0,
    "kd_alpha": 0.9,
    # decomposition
    "dec_fractions": [0.5, 0.25, 0.1],
    "dec_convs": ["features.4", "features.8"],
    "dec_linears": ["classifier.2"],
    "dec_steps": 200,
    # NAS
    "nas_budget": 0.5,
    "nas_candidates": 40,
    "nas_max_ratio": 0.8,
    "nas_steps": 200,
    "nas_amc_episodes": 150,
}

QUICK: dict[str, Any] = {**CONFIG, "seeds": [0], "dc_finetune_steps": 20,
                         "dc_centroid_steps": 5, "order_bits": [3],
                         "order_sparsity": [0.8], "int8_finetune_steps": 20,
                         "int8_calibration_batches": 2, "kd_sparsity": [0.9], "kd_steps": 10,
                         "dec_fractions": [0.25], "dec_steps": 10, "nas_candidates": 3,
                         "nas_steps": 10, "nas_amc_episodes": 5}


def _is_conv(model: nn.Module, name: str) -> bool:
    return isinstance(model.get_submodule(name.rsplit(".", 1)[0]), nn.Conv2d)


def _weights(model: nn.Module) -> list[str]:
    return [n for n, p in model.named_parameters() if p.dim() >= 2]


# ----------------------------------------------------------------------------- bytes
def pruned_bits(weight: torch.Tensor, index_bits: int, value_bits: int = 32) -> int:
    """Bits of a pruned layer stored as Deep Compression's first stage does: every kept
    value in ``value_bits`` bits plus a relative index of ``index_bits`` bits per entry,
    filler zeros included (:func:`prunekit.fusion.relative_indices`)."""
    positions = weight.flatten().nonzero().flatten()
    gaps, _ = relative_indices(positions, index_bits)
    return int(gaps.numel()) * (value_bits + index_bits)


def bits_of(model: nn.Module, index_bits: dict[str, int]) -> int:
    """Bits of ``model`` after pruning: the layers of ``index_bits`` as :func:`pruned_bits`,
    every other parameter dense at 32 bits."""
    total = 0
    for name, p in model.named_parameters():
        total += pruned_bits(p.detach(), index_bits[name]) if name in index_bits \
            else 32 * p.numel()
    return total


# ----------------------------------------------------------------------------- Deep Compression
def _cycle(loader, seed: int):
    """Batches of ``loader`` forever, in an order fixed by ``seed`` (its shuffling generator,
    when it has one, is re-seeded, as :func:`prunekit.train.train` does)."""
    torch.manual_seed(seed)
    generator = getattr(loader, "generator", None)
    if isinstance(generator, torch.Generator):
        generator.manual_seed(seed)
    while True:
        yield from loader


def deep_compression(cfg: dict[str, Any], seed: int = 0) -> dict[str, Any]:
    """Prune -> fine-tune -> share -> train the shared values -> Huffman, on the zoo's CNN."""
    train_loader, test_loader = data.digits()
    model = zoo.load("cnn-digits")
    names = _weights(model)
    bits = {n: cfg["dc_bits"]["conv" if _is_conv(model, n) else "fc"] for n in names}
    dense_bits = 32 * sum(p.numel() for p in model.parameters())
    stages: dict[str, dict[str, float]] = {}
    stages["dense"] = {"accuracy": train.evaluate(model, test_loader), "bits": dense_bits}
    pk.prune(model, cfg["dc_sparsity"], "magnitude")
    stages["pruned"] = {"accuracy": train.evaluate(model, test_loader)}
    train.fine_tune(model, train_loader, steps=cfg["dc_finetune_steps"], seed=seed)
    pk.remove_masks(model)
    stages["pruned + fine-tuned"] = {"accuracy": train.evaluate(model, test_loader),
                                     "bits": bits_of(model, bits)}
    shared = share_model_weights(model, bits)
    stages["shared"] = {"accuracy": train.evaluate(model, test_loader)}
    model.eval()        # only the shared values change (not the BatchNorm statistics)
    for _, (x, y) in zip(range(cfg["dc_centroid_steps"]), _cycle(train_loader, seed)):
        model.zero_grad()
        F.cross_entropy(model(x), y).backward()
        centroid_step(model, shared, lr=cfg["dc_centroid_lr"])
    model.eval()
    plain = compression_report(model, shared, index_bits=bits, huffman=False)
    huff = compression_report(model, shared, index_bits=bits, huffman=True)
    acc = train.evaluate(model, test_loader)
    stages["shared + centroids trained"] = {"accuracy": acc, "bits": plain.total_bits}
    stages["+ Huffman"] = {"accuracy": acc, "bits": huff.total_bits}
    for s in stages.values():
        if "bits" in s:
            s["ratio"] = dense_bits / s["bits"]
    layers = {n: {"params": int(model.get_parameter(n).numel()),
                  "kept": int((shared[n][1] >= 0).sum()),
                  "weight_bits": bits[n],
                  "distinct": int(shared_to_dense(*shared[n]).unique().numel()),
                  "plain": plain.layers[n].bits, "huffman": huff.layers[n].bits}
              for n in names}
    return {"stages": stages, "layers": layers, "other_bits": huff.other_bits}


# ----------------------------------------------------------------------------- order
def order(cfg: dict[str, Any]) -> dict[str, Any]:
    """Test accuracy of prune-then-share and share-then-prune, no fine-tuning.

    Prune-then-share: global magnitude pruning to ``s``, then k-means sharing of the kept
    weights at ``b`` bits per layer. Share-then-prune: k-means sharing of all the weights at
    ``b`` bits, then global magnitude pruning of the shared weights to ``s`` (the shared
    values that fall under the threshold are lost, with the resolution spent on them)."""
    _, test_loader = data.digits()
    dense = zoo.load("cnn-digits")
    out: dict[str, Any] = {"bits": cfg["order_bits"], "sparsity": cfg["order_sparsity"],
                           "prune, then share": {}, "share, then prune": {},
                           "levels kept": {}}
    for s, b in itertools.product(cfg["order_sparsity"], cfg["order_bits"]):
        key = f"{s}/{b}"
        a = copy.deepcopy(dense)
        pk.prune(a, s, "magnitude")
        pk.remove_masks(a)
        share_model_weights(a, b)
        out["prune, then share"][key] = train.evaluate(a, test_loader)
        q = copy.deepcopy(dense)
        share_model_weights(q, b, names=_weights(q))
        pk.prune(q, s, "magnitude")
        pk.remove_masks(q)
        out["share, then prune"][key] = train.evaluate(q, test_loader)
        out["levels kept"][key] = {n: int(q.get_parameter(n).unique().numel()) - 1
                                   for n in _weights(q)}
    return out


# ----------------------------------------------------------------------------- int8
def int8(cfg: dict[str, Any], seed: int = 0) -> dict[str, Any]:
    """Dense and channel-pruned (L1 filters, ``int8_channel_ratio`` of every conv, compacted,
    fine-tuned) CNN, each in fp32 and int8: accuracy, bytes on disk and MACs."""
    train_loader, test_loader = data.digits()
    x1 = next(iter(test_loader))[0][:1]
    dense = zoo.load("cnn-digits")
    pruned = channel_pruned(dense, cfg, seed)
    calib = [x for x, _ in itertools.islice(train_loader, cfg["int8_calibration_batches"])]
    out = {}
    for name, m in (("dense", dense), ("pruned", pruned)):
        q = quantize_int8(m, calib)
        out[name] = {"fp32": {"accuracy": train.evaluate(m, test_loader),
                              "bytes": state_dict_bytes(m)},
                     "int8": {"accuracy": train.evaluate(q, test_loader),
                              "bytes": state_dict_bytes(q)},
                     "macs": pk.count_macs(m, x1)[0],
                     "params": sum(p.numel() for p in m.parameters())}
    return out


def l1_channels(model: nn.Module, ratio: float, example: torch.Tensor | None = None) -> nn.Module:
    """A compacted copy of ``model`` without ``ratio`` of every convolution's filters (L1 norm,
    Li et al. 2017, each layer on its own), in eval mode; ``example`` is one input for
    :func:`prunekit.compact` (default: a digits test image)."""
    x1 = next(iter(data.digits()[1]))[0][:1] if example is None else example
    m = copy.deepcopy(model)
    convs = [n + ".weight" for n, mod in m.named_modules() if isinstance(mod, nn.Conv2d)]
    pk.apply_masks(m, pk.make_masks(pk.score(m, "l1_filter", include=convs), ratio,
                                    granularity="channel", scope="layer", model=m))
    return pk.compact(m, x1).eval()


def channel_pruned(dense: nn.Module, cfg: dict[str, Any], seed: int = 0) -> nn.Module:
    """``dense`` with ``int8_channel_ratio`` of every conv's filters removed (:func:`l1_channels`)
    and fine-tuned for ``int8_finetune_steps`` steps."""
    m = l1_channels(dense, cfg["int8_channel_ratio"])
    train.fine_tune(m, data.digits()[0], steps=cfg["int8_finetune_steps"], seed=seed)
    return m


# ----------------------------------------------------------------------------- KD
def kd_finetune(student: nn.Module, teacher: nn.Module | None, loader, cfg: dict[str, Any],
                seed: int) -> None:
    """Fine-tune ``student`` for ``kd_steps`` Adam steps on ``loader`` (batch order fixed by
    ``seed``): with :func:`~prunekit.fusion.kd_loss` (``kd_temperature``, ``kd_alpha``) when
    ``teacher`` is given, with plain cross-entropy otherwise. Masks stay applied."""
    torch.manual_seed(seed)
    opt = torch.optim.Adam([p for p in student.parameters() if p.requires_grad],
                           lr=cfg["kd_lr"])
    if teacher is not None:
        teacher.eval()
    student.train()
    for _, (x, y) in zip(range(cfg["kd_steps"]), _cycle(loader, seed)):
        logits = student(x)
        if teacher is None:
            loss = F.cross_entropy(logits, y)
        else:
            with torch.no_grad():
                t = teacher(x)
            loss = kd_loss(logits, t, y, temperature=cfg["kd_temperature"],
                           alpha=cfg["kd_alpha"])
        opt.zero_grad()
        loss.backward()
        opt.step()
    student.eval()


def kd(cfg: dict[str, Any], progress: bool = True) -> dict[str, Any]:
    """Test accuracy of the globally magnitude-pruned CNN at each ``kd_sparsity``: as pruned,
    after plain fine-tuning and after fine-tuning with the dense model as teacher."""
    train_loader, test_loader = data.digits()
    teacher = zoo.load("cnn-digits")
    out: dict[str, Any] = {"dense": train.evaluate(teacher, test_loader), "pruned": {},
                           "plain": {}, "KD": {}}
    runs = list(itertools.product(cfg["kd_sparsity"], cfg["seeds"]))
    for s, seed in tqdm(runs, desc="distillation", disable=not progress):
        key = str(s)
        for method in ("plain", "KD"):
            student = copy.deepcopy(teacher)
            pk.prune(student, s, "magnitude")
            out["pruned"][key] = train.evaluate(student, test_loader)
            kd_finetune(student, teacher if method == "KD" else None, train_loader, cfg, seed)
            out[method].setdefault(key, []).append(train.evaluate(student, test_loader))
    return out


# ----------------------------------------------------------------------------- decomposition
def tucker_ranks(conv: nn.Conv2d, fraction: float) -> tuple[int, int]:
    """The largest Tucker-2 ranks ``(out_rank, in_rank)``, the same fraction of ``out`` and
    ``in`` channels, whose three convolutions have at most ``fraction`` of ``conv``'s
    weights."""
    o, i = conv.out_channels, conv.in_channels
    k = conv.kernel_size[0] * conv.kernel_size[1]
    best = (1, 1)
    for r in range(1, o + 1):
        ro, ri = r, max(1, round(r * i / o))
        if i * ri + ri * ro * k + ro * o <= fraction * o * i * k:
            best = (ro, ri)
    return best


def decompose(model: nn.Module, fraction: float, cfg: dict[str, Any]) -> nn.Module:
    """A copy of ``model`` with the ``dec_convs`` replaced by Tucker-2 and the
    ``dec_linears`` by truncated SVD, each at most ``fraction`` of its weights."""
    m = copy.deepcopy(model)
    for name in cfg["dec_convs"]:
        conv = m.get_submodule(name)
        parent, idx = name.rsplit(".", 1)
        m.get_submodule(parent)[int(idx)] = tucker2(conv, *tucker_ranks(conv, fraction))
    for name in cfg["dec_linears"]:
        lin = m.get_submodule(name)
        parent, idx = name.rsplit(".", 1)
        r = rank_for_budget(lin.in_features, lin.out_features, fraction)
        m.get_submodule(parent)[int(idx)] = low_rank(lin, r)
    return m


def _layer_weights(m: nn.Module, names: list[str]) -> int:
    return sum(p.numel() for n in names for p in m.get_submodule(n).parameters()
               if p.dim() >= 2)


def decomposition(cfg: dict[str, Any], progress: bool = True) -> dict[str, Any]:
    """Factorised vs pruned at the same weights of the ``dec_convs`` + ``dec_linears``:
    accuracy as is and after ``dec_steps`` fine-tuning steps (per seed); and for the
    Linear layers, the relative error of low rank, pruned and low rank + sparse."""
    train_loader, test_loader = data.digits()
    dense = zoo.load("cnn-digits")
    layers = cfg["dec_convs"] + cfg["dec_linears"]
    dense_w = _layer_weights(dense, layers)
    out: dict[str, Any] = {"dense": train.evaluate(dense, test_loader),
                           "dense_weights": dense_w, "fractions": cfg["dec_fractions"],
                           "factorised": {}, "pruned": {}, "error": {}}
    runs = list(itertools.product(cfg["dec_fractions"], cfg["seeds"]))
    for f, seed in tqdm(runs, desc="decomposition", disable=not progress):
        key = str(f)
        fac = decompose(dense, f, cfg)
        n_fac = _layer_weights(fac, layers)
        pr = copy.deepcopy(dense)
        keep = n_fac / dense_w              # prune to exactly the factorised weight count
        pk.prune(pr, 1.0 - keep, "magnitude", scope="layer",
                 include=[n + ".weight" for n in layers])
        row = {}
        for name, m in (("factorised", fac), ("pruned", pr)):
            before = train.evaluate(m, test_loader)
            train.fine_tune(m, train_loader, steps=cfg["dec_steps"], seed=seed)
            row[name] = (before, train.evaluate(m, test_loader))
        n_pr = sum(int(mask.sum()) for mask in pk.get_masks(pr).values())
        for name in ("factorised", "pruned"):
            d = out[name].setdefault(key, {"as is": row[name][0], "fine-tuned": [],
                                           "weights": n_fac if name == "factorised"
                                           else n_pr})
            d["fine-tuned"].append(row[name][1])
    lin = dense.get_submodule(cfg["dec_linears"][0])
    w = lin.weight.detach().double()
    n = w.numel()
    for f in cfg["dec_fractions"]:
        r = rank_for_budget(lin.in_features, lin.out_features, f)
        half = max(1, rank_for_budget(lin.in_features, lin.out_features, f / 2))
        lr_w = low_rank(lin, r)
        approx_lr = (lr_w[1].weight @ lr_w[0].weight).detach().double()
        kept = r * (lin.in_features + lin.out_features)
        pruned = w.flatten().clone()
        pruned[pruned.abs().argsort()[: n - kept]] = 0
        lps_kept = kept - half * (lin.in_features + lin.out_features)
        lps = low_rank_plus_sparse(lin, half, 1.0 - lps_kept / n)
        approx_lps = ((lps.low[1].weight @ lps.low[0].weight) + lps.sparse.weight).detach()
        err = {"low rank": float((w - approx_lr).norm() / w.norm()),
               "pruned": float((w - pruned.view_as(w)).norm() / w.norm()),
               "low rank + sparse": float((w - approx_lps.double()).norm() / w.norm()),
               "rank": r, "half rank": half, "weights": kept}
        out["error"][str(f)] = err
    return out


# ----------------------------------------------------------------------------- NAS
def nas(cfg: dict[str, Any], seed: int = 0) -> dict[str, Any]:
    """EagleEye's search under ``nas_budget`` of the MACs against uniform ratios, AMC's agent
    (``nas_amc_episodes`` episodes) and MetaPruning's widths at the same budget, every
    result built the same way (L1 channels of the trained CNN, compacted, adaptive BN,
    ``nas_steps`` fine-tuning steps): adaptive-BN accuracy on the validation split, test
    accuracy after fine-tuning; EagleEye's search history (vanilla vs adaptive BN)."""
    train_loader, val_loader, test_loader = data.digits(validation=0.5)
    val = tuple(torch.cat(t) for t in zip(*val_loader))
    x1 = val[0][:1]
    calib = [x for x, _ in itertools.islice(train_loader, 8)]
    model = zoo.load("cnn-digits")
    res = eagleeye_search(model, x1, budget=cfg["nas_budget"], calibration=calib,
                          validation=val, candidates=cfg["nas_candidates"],
                          max_ratio=cfg["nas_max_ratio"], seed=seed)
    space = SearchSpace(model, x1)
    out: dict[str, Any] = {"layers": list(res.names),
                           "history": [{k: h[k] for k in ("mac_fraction", "reward", "vanilla")}
                                       for h in res.history]}
    amc = amc_search(model, x1, val, budget=cfg["nas_budget"],
                     episodes=cfg["nas_amc_episodes"], max_ratio=cfg["nas_max_ratio"],
                     seed=seed, progress=False)
    meta = metapruning_search(model, x1, train_loader, budget=cfg["nas_budget"],
                              validation=val, seed=seed, progress=False)
    for name, ratios in (("EagleEye", res.best_ratios),
                         ("uniform", space.uniform(cfg["nas_budget"])),
                         ("AMC", amc.best_ratios), ("MetaPruning", meta.best_ratios)):
        m = adaptive_bn(space.compact(list(ratios)), calib)
        val_acc = train.evaluate(m, [val])
        train.fine_tune(m, train_loader, steps=cfg["nas_steps"], seed=seed)
        out[name] = {"ratios": [float(r) for r in ratios],
                     "kept": space.kept(list(ratios)),
                     "mac_fraction": float(space.mac_fraction(list(ratios))),
                     "adaptive BN": val_acc, "fine-tuned": train.evaluate(m, test_loader)}
    out["dense"] = train.evaluate(model, test_loader)
    return out


# ----------------------------------------------------------------------------- all
def run(cfg: dict[str, Any] | None = None, progress: bool = True) -> dict[str, Any]:
    """Every experiment of the chapter; a JSON-able dict (see the module docstring).

    Runs on one CPU thread (the float sums of the cached results; the notebook sets the
    same) and restores torch's thread count afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _run(CONFIG if cfg is None else cfg, progress)
    finally:
        torch.set_num_threads(threads)


def _run(cfg: dict[str, Any], progress: bool) -> dict[str, Any]:
    start = time.perf_counter()
    out: dict[str, Any] = {"config": cfg}
    steps = tqdm(total=6, desc="fusion experiments", disable=not progress)
    out["deep_compression"] = deep_compression(cfg)
    steps.update()
    out["order"] = order(cfg)
    steps.update()
    out["int8"] = int8(cfg)
    steps.update()
    out["kd"] = kd(cfg, progress)
    steps.update()
    out["decomposition"] = decomposition(cfg, progress)
    steps.update()
    runs = [nas(cfg, s) for s in cfg["seeds"]]
    out["nas"] = {"layers": runs[0]["layers"], "history": runs[0]["history"],
                  "dense": runs[0]["dense"]}
    for name in ("EagleEye", "uniform", "AMC", "MetaPruning"):
        out["nas"][name] = {k: [r[name][k] for r in runs] for k in runs[0][name]}
    steps.update()
    steps.close()
    out["seconds"] = round(time.perf_counter() - start, 1)
    return out


def load(path: Path | str = RESULTS) -> dict[str, Any]:
    """The cached results (``python -m prunekit.experiments.fusion`` writes them)."""
    return load_results(path)


def main(argv: list[str] | None = None) -> int:
    """``python -m prunekit.experiments.fusion [--quick] [--out PATH] [--no-progress]``."""
    return cli("prunekit.experiments.fusion", __doc__.splitlines()[0], run, CONFIG, QUICK, RESULTS, argv)


if __name__ == "__main__":
    raise SystemExit(main())
