"""The experiments behind the book's chapter on pruning language models, seeded and cached.

Everything runs on the zoo's tiny LLaMA (``prunekit.zoo.load("tinylm")``, about 0.79M
parameters trained on Python's own documentation, :mod:`prunekit.llm.tinylm`), on a CPU with
one thread. Perplexity is always measured on the held-out split (windows of 128 tokens);
calibration sequences come from the training split (seed 0):

* ``grid`` -- magnitude, Wanda (Sun et al. 2024) and SparseGPT (Frantar & Alistarh 2023),
  one-shot with :func:`prunekit.llm.prune_sequential`, at 50/60/70% unstructured and 4:8 and
  2:4: perplexity and prune time (the shape of Wanda's Table 2);
* ``sweep`` -- the three methods over a sweep of unstructured sparsities, with the greedy
  continuation of one prompt at every point (the chapter's slider);
* ``calibration`` -- Wanda and SparseGPT at 50% and 2:4 with 1 ... 128 calibration sequences;
* ``owl`` -- OWL's outlier ratios per block and Wanda with OWL's non-uniform sparsities
  (Yin et al. 2024) against uniform Wanda;
* ``structured`` -- LLM-Pruner width pruning (Ma et al. 2023), ShortGPT depth pruning by
  Block Influence (Men et al. 2024) against dropping the last block, each as is and after
  LoRA recovery (Hu et al. 2022, prunekit's own small LoRA, merged back), with the dense model
  plus the same LoRA steps as a control; parameters, perplexity and forward tokens/s.

``python -m prunekit.experiments.llm`` recomputes all of it (a few minutes on one CPU thread)
and writes ``prunekit/experiments/results/llm.json`` (the file the book loads); ``--quick``
runs a tiny configuration (a smoke test, not the numbers of record). Every number but the
timings is deterministic on a given machine and torch version.
"""

from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Any

import torch
from torch.utils import benchmark
from tqdm.auto import tqdm

from prunekit import zoo
from prunekit.llm import (
    add_lora,
    block_influence,
    drop_blocks,
    least_influential,
    llm_pruner,
    merge_lora,
    outlier_ratios,
    owl_sparsities,
    perplexity,
    prune_sequential,
    tinylm,
)

from . import cli, load_results

__all__ = ["CONFIG", "QUICK", "RESULTS", "PATTERNS", "calibration_curve", "grid", "load", "main", "n_params",
           "owl", "prune", "run", "structured", "sweep", "tokens_per_second"]

RESULTS: Path = Path(__file__).resolve().parent / "results" / "llm.json"

#: name -> (sparsity, prunen, prunem) of prune_sequential
PATTERNS: dict[str, tuple[float | None, int, int]] = {
    "50%": (0.5, 0, 0), "60%": (0.6, 0, 0), "70%": (0.7, 0, 0), "4:8": (None, 4, 8), "2:4": (None, 2, 4)}

CONFIG: dict[str, Any] = {
    "seq_len": 128,
    "nsamples": 32,                   # calibration sequences of seq_len tokens (training split)
    "calib_seed": 0,
    "eval_tokens": 0,                 # 0: the whole held-out split
    "methods": ["magnitude", "wanda", "sparsegpt"],
    "patterns": ["50%", "60%", "70%", "4:8", "2:4"],
    "sweep": [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9],
    "prompt": "The for statement is used to",
    "new_tokens": 40,
    "calib_sizes": [1, 2, 4, 8, 16, 32, 64, 128],
    "calib_patterns": ["50%", "2:4"],
    "owl_sparsities": [0.5, 0.6, 0.7],
    "owl_m": 5.0, "owl_lambda": 0.08,
    "heads": 0.25, "mlp": 0.25,       # LLM-Pruner: fraction of heads / MLP channels per block
    "drop": 1,                        # ShortGPT: blocks removed
    "lora": {"r": 8, "alpha": 16, "steps": 200, "lr": 1e-3, "batch_size": 16, "warmup": 20, "seed": 0},
    "speed": {"seq_len": 128, "min_time": 1.0, "rounds": 3},
}

QUICK: dict[str, Any] = {**CONFIG, "nsamples": 2, "eval_tokens": 1024, "patterns": ["50%", "2:4"],
                         "sweep": [0.0, 0.5], "new_tokens": 5, "calib_sizes": [1, 2],
                         "calib_patterns": ["50%"], "owl_sparsities": [0.5],
                         "lora": {**CONFIG["lora"], "steps": 2, "batch_size": 2, "warmup": 1},
                         "speed": {"seq_len": 16, "min_time": 0.01, "rounds": 1}}


def n_params(model: torch.nn.Module) -> int:
    """The number of parameters of ``model``."""
    return sum(p.numel() for p in model.parameters())


def data(cfg: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(training ids, held-out ids, calibration [max(calib_sizes, nsamples), seq_len])``."""
    train_ids, test_ids = zoo.loaders("tinylm")
    if cfg["eval_tokens"]:
        test_ids = test_ids[:cfg["eval_tokens"]]
    n = max([cfg["nsamples"], *cfg["calib_sizes"]])
    calib = tinylm.calibration(train_ids, n, cfg["seq_len"], seed=cfg["calib_seed"])
    return train_ids, test_ids, calib


def prune(method: str, pattern: str | float, calib: torch.Tensor, nsamples: int) -> torch.nn.Module:
    """The zoo's tinylm pruned one-shot by ``method`` to ``pattern`` (a name of :data:`PATTERNS`
    or an unstructured sparsity) on the first ``nsamples`` calibration sequences."""
    s, n, m = PATTERNS[pattern] if isinstance(pattern, str) else (float(pattern), 0, 0)
    model = zoo.load("tinylm").eval()
    prune_sequential(model, calib, method, s, prunen=n, prunem=m, nsamples=nsamples, progress=False)
    return model


def grid(cfg: dict[str, Any], progress: bool = True) -> dict[str, Any]:
    """Perplexity and prune seconds of every method x pattern (plus the dense model)."""
    _, test_ids, calib = data(cfg)
    seq = cfg["seq_len"]
    out: dict[str, Any] = {"dense": perplexity(zoo.load("tinylm"), test_ids, seq_len=seq),
                           "ppl": {}, "seconds": {}}
    runs = [(m, p) for m in cfg["methods"] for p in cfg["patterns"]]
    for method, pattern in tqdm(runs, desc="perplexity grid", disable=not progress):
        start = time.perf_counter()
        model = prune(method, pattern, calib, cfg["nsamples"])
        out["seconds"].setdefault(method, {})[pattern] = round(time.perf_counter() - start, 3)
        out["ppl"].setdefault(method, {})[pattern] = perplexity(model, test_ids, seq_len=seq)
    return out


def sweep(cfg: dict[str, Any], progress: bool = True) -> dict[str, Any]:
    """Perplexity and the greedy continuation of ``prompt`` per method and sparsity."""
    _, test_ids, calib = data(cfg)
    ppl: dict[str, list[float]] = {}
    text: dict[str, list[str]] = {}
    runs = [(m, s) for m in cfg["methods"] for s in cfg["sweep"]]
    for method, s in tqdm(runs, desc="sparsity sweep", disable=not progress):
        model = prune(method, s, calib, cfg["nsamples"])
        ppl.setdefault(method, []).append(perplexity(model, test_ids, seq_len=cfg["seq_len"]))
        text.setdefault(method, []).append(tinylm.generate(model, cfg["prompt"], cfg["new_tokens"]))
    return {"sparsity": cfg["sweep"], "ppl": ppl, "text": text}


def calibration_curve(cfg: dict[str, Any], progress: bool = True) -> dict[str, Any]:
    """Perplexity of Wanda and SparseGPT against the number of calibration sequences."""
    _, test_ids, calib = data(cfg)
    out: dict[str, Any] = {"sizes": cfg["calib_sizes"], "ppl": {}}
    runs = [(m, p, n) for m in ("wanda", "sparsegpt") for p in cfg["calib_patterns"]
            for n in cfg["calib_sizes"]]
    for method, pattern, n in tqdm(runs, desc="calibration size", disable=not progress):
        model = prune(method, pattern, calib, n)
        out["ppl"].setdefault(method, {}).setdefault(pattern, []).append(
            perplexity(model, test_ids, seq_len=cfg["seq_len"]))
    return out


def owl(cfg: dict[str, Any], progress: bool = True) -> dict[str, Any]:
    """OWL's outlier ratios and block sparsities; Wanda with them against uniform Wanda."""
    _, test_ids, calib = data(cfg)
    nsamples = cfg["nsamples"]
    ratios = outlier_ratios(zoo.load("tinylm"), calib, m=cfg["owl_m"], nsamples=nsamples)
    out: dict[str, Any] = {"ratios": ratios, "sparsities": {}, "uniform": {}, "owl": {}}
    for s in tqdm(cfg["owl_sparsities"], desc="OWL", disable=not progress):
        layer_s = owl_sparsities(ratios, s, lam=cfg["owl_lambda"])
        out["sparsities"][str(s)] = layer_s
        for key, sp in (("uniform", s), ("owl", layer_s)):
            model = zoo.load("tinylm").eval()
            prune_sequential(model, calib, "wanda", sp, nsamples=nsamples, progress=False)
            out[key][str(s)] = perplexity(model, test_ids, seq_len=cfg["seq_len"])
    return out


def tokens_per_second(model: torch.nn.Module, seq_len: int, min_time: float) -> float:
    """Tokens per second of a ``[1, seq_len]`` forward pass on one CPU thread (median)."""
    ids = torch.randint(0, tinylm.VOCAB_SIZE, (1, seq_len), generator=torch.Generator().manual_seed(0))
    model.eval()
    timer = benchmark.Timer(stmt="with torch.no_grad(): model(ids)",
                            globals={"model": model, "ids": ids, "torch": torch}, num_threads=1)
    return seq_len / timer.blocked_autorange(min_run_time=min_time).median


def recover(model: torch.nn.Module, train_ids: torch.Tensor, cfg: dict[str, Any]) -> torch.nn.Module:
    """A copy of ``model`` trained with LoRA on the training split, merged back (same shapes)."""
    lo = cfg["lora"]
    model = copy.deepcopy(model)
    torch.manual_seed(lo["seed"])      # LoRA's A (Kaiming) and its dropout draw from the global generator
    add_lora(model, r=lo["r"], alpha=lo["alpha"])
    tinylm.train_lm(model, train_ids, steps=lo["steps"], batch_size=lo["batch_size"], seq_len=cfg["seq_len"],
                    lr=lo["lr"], warmup=lo["warmup"], seed=lo["seed"], progress=False)
    merge_lora(model)
    return model.eval()


def structured(cfg: dict[str, Any], progress: bool = True) -> dict[str, Any]:
    """Width (LLM-Pruner) and depth (ShortGPT, last blocks) pruning, as is and after LoRA."""
    train_ids, test_ids, calib = data(cfg)
    nsamples = cfg["nsamples"]
    dense = zoo.load("tinylm").eval()
    bi = block_influence(dense, calib, nsamples=nsamples)
    short = least_influential(bi, cfg["drop"])
    last = list(range(len(bi) - cfg["drop"], len(bi)))
    width = copy.deepcopy(dense)
    kept = llm_pruner(width, calib, head_sparsity=cfg["heads"], mlp_sparsity=cfg["mlp"], nsamples=nsamples)
    models = {"dense": dense, "width": width.eval(), "depth (ShortGPT)": drop_blocks(dense, short),
              "depth (last)": drop_blocks(dense, last)}
    out: dict[str, Any] = {"block_influence": bi.tolist(), "shortgpt_drop": short, "last_drop": last,
                           "width_kept": {str(b): {k: len(v) for k, v in d.items()} for b, d in kept.items()},
                           "models": {}}
    for name, model in tqdm(list(models.items()), desc="structured + LoRA", disable=not progress):
        rec = recover(model, train_ids, cfg)
        out["models"][name] = {"params": n_params(model),
                               "ppl": perplexity(model, test_ids, seq_len=cfg["seq_len"]),
                               "ppl_lora": perplexity(rec, test_ids, seq_len=cfg["seq_len"])}
    sp = cfg["speed"]
    speeds = dict.fromkeys(models, 0.0)
    for _ in tqdm(range(sp["rounds"]), desc="tokens/s", disable=not progress):
        for name, model in models.items():        # interleaved, best of rounds: a shared CPU is noisy
            speeds[name] = max(speeds[name], tokens_per_second(model, sp["seq_len"], sp["min_time"]))
    for name in models:
        out["models"][name]["tokens_per_s"] = speeds[name]
    return out


def run(cfg: dict[str, Any], progress: bool = True) -> dict[str, Any]:
    """Every experiment of the chapter; plain JSON-able numbers."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        start = time.perf_counter()
        out: dict[str, Any] = {"config": cfg, "torch": torch.__version__}
        out["grid"] = grid(cfg, progress)
        out["sweep"] = sweep(cfg, progress)
        out["calibration"] = calibration_curve(cfg, progress)
        out["owl"] = owl(cfg, progress)
        out["structured"] = structured(cfg, progress)
        out["seconds"] = round(time.perf_counter() - start, 1)
    finally:
        torch.set_num_threads(previous)
    return out


def load(path: Path | str = RESULTS) -> dict[str, Any]:
    """The cached results (``python -m prunekit.experiments.llm`` writes them)."""
    return load_results(path)


def main(argv: list[str] | None = None) -> int:
    """``python -m prunekit.experiments.llm [--quick] [--out PATH] [--no-progress]``."""
    return cli("prunekit.experiments.llm", __doc__.splitlines()[0], run, CONFIG, QUICK, RESULTS, argv)


if __name__ == "__main__":
    raise SystemExit(main())
