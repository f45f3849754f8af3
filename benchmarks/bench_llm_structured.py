"""Structured pruning of the zoo's tiny LLaMA: LLM-Pruner width pruning (+ LoRA recovery) vs ShortGPT depth pruning.

For the dense ``tinylm`` and its structurally pruned versions, prints the parameter count, the
held-out perplexity (``prunekit.llm.perplexity``, windows of 128 tokens, the test split: never
used for calibration or recovery) and the forward-pass speed on one CPU thread (tokens per
second of a ``[1, seq_len]`` forward pass, ``torch.utils.benchmark``: the best of ``--rounds``
medians, the models interleaved, as other processes share the CPU; a model recovered with LoRA is
merged, so it has the shapes and the speed of the model it recovers):

* ``width``: :func:`prunekit.llm.llm_pruner`, ``--heads`` of the attention heads and ``--mlp`` of
  the MLP channels of every block removed (first-order Taylor importance, ``--nsamples``
  calibration sequences of the training split), then the same with LoRA recovery
  (:func:`prunekit.llm.add_lora`, r=8, α=16 on every projection, ``--lora-steps`` steps of
  next-token training on the training split, merged back with :func:`prunekit.llm.merge_lora`);
* ``depth``: ShortGPT, the ``--drop`` blocks of lowest Block Influence removed
  (:func:`prunekit.llm.block_influence`, :func:`prunekit.llm.drop_blocks`), against removing the
  last ``--drop`` blocks; with the same LoRA recovery;
* ``dense + LoRA``: the same LoRA steps on the unpruned model, a control (the tiny LM is trained
  for only 800 steps, so extra training alone lowers its perplexity).

    python benchmarks/bench_llm_structured.py [--heads 0.25] [--mlp 0.25] [--drop 1] [--lora-steps 200]
"""

from __future__ import annotations

import argparse
import copy
import time
from collections.abc import Sequence

import torch
from torch.utils import benchmark

from prunekit import zoo
from prunekit.llm import perplexity, tinylm
from prunekit.llm.depth import block_influence, drop_blocks, least_influential
from prunekit.llm.lora import add_lora, merge_lora
from prunekit.llm.width import llm_pruner


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def tokens_per_second(model: torch.nn.Module, seq_len: int, threads: int, min_time: float) -> float:
    ids = torch.randint(0, tinylm.VOCAB_SIZE, (1, seq_len), generator=torch.Generator().manual_seed(0))
    model.eval()
    timer = benchmark.Timer(stmt="with torch.no_grad(): model(ids)", globals={"model": model, "ids": ids, "torch": torch},
                            num_threads=threads)
    return seq_len / timer.blocked_autorange(min_run_time=min_time).median


def recover(model: torch.nn.Module, train_ids: torch.Tensor, steps: int, lr: float) -> torch.nn.Module:
    model = copy.deepcopy(model)
    torch.manual_seed(0)               # LoRA's A (Kaiming) and its dropout draw from the global generator
    add_lora(model, r=8, alpha=16)
    tinylm.train_lm(model, train_ids, steps=steps, batch_size=16, seq_len=128, lr=lr, warmup=min(20, steps),
                    progress=False)
    merge_lora(model)
    return model.eval()


def main(argv: Sequence[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--heads", type=float, default=0.25, help="head_sparsity of llm_pruner")
    ap.add_argument("--mlp", type=float, default=0.25, help="mlp_sparsity of llm_pruner")
    ap.add_argument("--drop", type=int, default=1, help="decoder blocks removed by depth pruning")
    ap.add_argument("--nsamples", type=int, default=32, help="calibration sequences (128 tokens, training split)")
    ap.add_argument("--lora-steps", type=int, default=200, help="LoRA recovery steps (0: none)")
    ap.add_argument("--lora-lr", type=float, default=1e-3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seq-len", type=int, default=128, help="tokens per timed forward pass")
    ap.add_argument("--min-time", type=float, default=1.0, help="seconds of timing per model and round")
    ap.add_argument("--rounds", type=int, default=3, help="timing rounds, interleaved over the models (best kept)")
    ap.add_argument("--eval-tokens", type=int, default=0, help="score only the first N held-out tokens (0: all)")
    args = ap.parse_args(argv)

    torch.manual_seed(0)
    dense = zoo.load("tinylm").eval()
    train_ids, test_ids = zoo.loaders("tinylm")
    if args.eval_tokens:
        test_ids = test_ids[:args.eval_tokens]
    calib = tinylm.calibration(train_ids, args.nsamples, 128, seed=0)

    models: dict[str, torch.nn.Module] = {"dense": dense}
    seconds: dict[str, float] = {"dense": 0.0}

    t = time.perf_counter()
    width = copy.deepcopy(dense)
    llm_pruner(width, calib, head_sparsity=args.heads, mlp_sparsity=args.mlp)
    models[f"width (LLM-Pruner, heads {args.heads:g}, MLP {args.mlp:g})"] = width
    seconds[f"width (LLM-Pruner, heads {args.heads:g}, MLP {args.mlp:g})"] = time.perf_counter() - t

    t = time.perf_counter()
    bi = block_influence(dense, calib)
    short = least_influential(bi, args.drop)
    models[f"depth (ShortGPT, drop {short})"] = drop_blocks(dense, short)
    seconds[f"depth (ShortGPT, drop {short})"] = time.perf_counter() - t
    last = list(range(len(bi) - args.drop, len(bi)))
    models[f"depth (last blocks, drop {last})"] = drop_blocks(dense, last)
    seconds[f"depth (last blocks, drop {last})"] = 0.0

    if args.lora_steps:
        for name in list(models):
            t = time.perf_counter()
            models[f"{name} + LoRA {args.lora_steps}"] = recover(models[name], train_ids, args.lora_steps, args.lora_lr)
            seconds[f"{name} + LoRA {args.lora_steps}"] = seconds[name] + time.perf_counter() - t

    # LoRA models are merged: the same shapes, hence the same speed, as the model they recover
    shapes = [name for name in models if " + LoRA" not in name]
    speeds = dict.fromkeys(shapes, 0.0)
    for _ in range(args.rounds):                                  # interleaved, best of rounds: a shared CPU is noisy
        for name in shapes:
            speeds[name] = max(speeds[name], tokens_per_second(models[name], args.seq_len, args.threads, args.min_time))

    print(f"tinylm ({n_params(dense):,} parameters), Block Influence per block: "
          f"{', '.join(f'{v:.4f}' for v in bi.tolist())}")
    print(f"held-out perplexity over {test_ids.numel():,} tokens (windows of 128); forward speed on "
          f"[1, {args.seq_len}], {args.threads} thread(s), best of {args.rounds} medians, "
          f"torch {torch.__version__}\n")
    print("| model | parameters | vs dense | perplexity | tokens/s | speed-up | prune (+ recovery) s |")
    print("|---|---|---|---|---|---|---|")
    results: dict = {}
    base_speed = None
    for name, model in models.items():
        ppl = perplexity(model, test_ids, seq_len=128)
        speed = speeds[name.split(" + LoRA")[0]]
        base_speed = base_speed or speed
        results[name] = {"params": n_params(model), "ppl": ppl, "tokens_per_s": speed, "seconds": seconds[name]}
        print(f"| {name} | {n_params(model):,} | {n_params(model) / n_params(dense):.1%} | {ppl:.2f} | "
              f"{speed:,.0f} | {speed / base_speed:.2f}x | {seconds[name]:.1f} |")
    results["block_influence"] = bi
    return results


if __name__ == "__main__":
    main()
