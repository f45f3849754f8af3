"""Small pretrained checkpoints that ship inside the package.

Each checkpoint is a float32 ``state_dict`` in ``prunekit/checkpoints/<name>.pt``;
``prunekit/checkpoints/zoo.json`` records, per name, the model class and its constructor
arguments, the dataset and its arguments, the training recipe and the test accuracy measured
when the checkpoint was built. Every checkpoint is reproducible with one command::

    python -m prunekit.zoo build mlp-digits     # or: build all / list / info NAME

A build writes into the cache directory (:func:`cache_dir`: ``$PRUNEKIT_CACHE``, else
``~/.cache/prunekit``), never into the installed package unless asked to with ``--dir``
(``python -m prunekit.zoo build all --dir prunekit/checkpoints`` refreshes the shipped files).
:func:`load`, :func:`info` and :func:`available` look in the cache first, then at the
shipped checkpoints.

Typical use in a notebook::

    from prunekit import zoo
    model = zoo.load("cnn-shapes")               # eval mode, no training needed
    train_loader, test_loader = zoo.loaders("cnn-shapes")
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import data as _data
from . import models as _models
from ._validate import check_int
from .metrics import count_params
from .train import evaluate, set_seed, train

__all__ = ["RECIPES", "CHECKPOINT_DIR", "available", "build", "cache_dir", "cache_root", "info", "load", "loaders", "main", "retrain"]

CHECKPOINT_DIR: Path = Path(__file__).resolve().parent / "checkpoints"
_INDEX = "zoo.json"


def cache_root() -> Path:
    """prunekit's cache directory: ``$PRUNEKIT_CACHE`` if the variable is set, else
    ``~/.cache/prunekit`` (checkpoints and experiment results live below it)."""
    root = os.environ.get("PRUNEKIT_CACHE")
    return Path(root) if root else Path.home() / ".cache" / "prunekit"


def cache_dir() -> Path:
    """Where :func:`build` writes by default and :func:`load` looks first:
    ``$PRUNEKIT_CACHE/checkpoints`` if the variable is set, else ``~/.cache/prunekit/checkpoints``."""
    return cache_root() / "checkpoints"

_MODELS: dict[str, Callable[..., nn.Module]] = {
    "MLP": _models.MLP,
    "SmallCNN": _models.SmallCNN,
    "ResNet": _models.ResNet,
}
_DATASETS: dict[str, Callable[..., tuple[Any, Any]]] = {
    "digits": _data.digits,
    "shapes": _data.shapes,
}

# The recipes are the source of truth for `build`; zoo.json stores a copy plus the results.
RECIPES: dict[str, dict[str, Any]] = {
    "mlp-digits": {
        "description": "MLP 64-128-64-10 on scikit-learn's 8x8 digits",
        "model": "MLP",
        "model_kwargs": {"in_features": 64, "hidden": [128, 64], "num_classes": 10},
        "dataset": "digits",
        "dataset_kwargs": {"batch_size": 64, "test_fraction": 0.25, "seed": 0},
        "recipe": {"epochs": 20, "lr": 0.003, "optimizer": "adam", "weight_decay": 0.0,
                   "lr_schedule": "cosine", "seed": 0},
    },
    "cnn-digits": {
        "description": "VGG-style SmallCNN (16-32-64, BatchNorm) on scikit-learn's 8x8 digits",
        "model": "SmallCNN",
        "model_kwargs": {"in_channels": 1, "num_classes": 10, "widths": [16, 32, 64],
                         "hidden": 64},
        "dataset": "digits",
        "dataset_kwargs": {"batch_size": 64, "test_fraction": 0.25, "seed": 0},
        "recipe": {"epochs": 15, "lr": 0.003, "optimizer": "adam", "weight_decay": 0.0,
                   "lr_schedule": "cosine", "seed": 0},
    },
    "cnn-shapes": {
        "description": "VGG-style SmallCNN (16-32-64, BatchNorm) on the procedural shapes set",
        "model": "SmallCNN",
        "model_kwargs": {"in_channels": 3, "num_classes": 10, "widths": [16, 32, 64],
                         "hidden": 64},
        "dataset": "shapes",
        "dataset_kwargs": {"n_train": 5000, "n_test": 1000, "batch_size": 64, "seed": 0},
        "recipe": {"epochs": 4, "lr": 0.003, "optimizer": "adam", "weight_decay": 0.0,
                   "lr_schedule": "cosine", "seed": 0},
    },
    "resnet-shapes": {
        "description": "ResNet (16-32-64, one BasicBlock per stage) on the procedural shapes set",
        "model": "ResNet",
        "model_kwargs": {"in_channels": 3, "num_classes": 10, "widths": [16, 32, 64],
                         "blocks_per_stage": 1},
        "dataset": "shapes",
        "dataset_kwargs": {"n_train": 5000, "n_test": 1000, "batch_size": 64, "seed": 0},
        "recipe": {"epochs": 4, "lr": 0.003, "optimizer": "adam", "weight_decay": 0.0,
                   "lr_schedule": "cosine", "seed": 0},
    },
}


# --- chapter 7's language model (prunekit.llm.tinylm; needs transformers and tokenizers) ----------------

def _tiny_llama(**kwargs: Any) -> nn.Module:
    from .llm import tinylm
    return tinylm.tiny_llama(**kwargs)


def _pydoc(vocab_size: int = 512) -> tuple[torch.Tensor, torch.Tensor]:
    """``(training token ids, held-out token ids)`` of Python's pydoc topics (1-D tensors)."""
    from .llm import tinylm
    return tinylm.tokens("train", vocab_size), tinylm.tokens("test", vocab_size)


_MODELS["TinyLlama"] = _tiny_llama
_DATASETS["pydoc"] = _pydoc
RECIPES["tinylm"] = {
    "description": "tiny LLaMA (4 blocks, d=128, SwiGLU 256, byte-level BPE of 512 tokens) on Python's pydoc topics",
    "kind": "lm",
    "model": "TinyLlama",
    "model_kwargs": {"vocab_size": 512, "hidden_size": 128, "intermediate_size": 256, "num_hidden_layers": 4,
                     "num_attention_heads": 4, "num_key_value_heads": 4, "max_position_embeddings": 256,
                     "tie_word_embeddings": False},
    "dataset": "pydoc",
    "dataset_kwargs": {"vocab_size": 512},
    "recipe": {"steps": 800, "batch_size": 16, "seq_len": 128, "lr": 0.003, "warmup": 50, "weight_decay": 0.1,
               "seed": 0},
}
#: The prompt of the sample recorded with "tinylm" (greedy decoding).
LM_PROMPT = "The for statement"


def _build_lm(name: str, rec: dict[str, Any], out_dir: Path, progress: bool) -> float:
    """Train a language-model recipe; records next-token accuracy (as test_accuracy), perplexity, a sample."""
    from .llm import perplexity, tinylm
    recipe = rec["recipe"]
    set_seed(recipe["seed"])
    model = _build_model(rec)
    train_ids, test_ids = _DATASETS[rec["dataset"]](**rec["dataset_kwargs"])
    start = time.perf_counter()
    history = tinylm.train_lm(model, train_ids, steps=recipe["steps"], batch_size=recipe["batch_size"],
                              seq_len=recipe["seq_len"], lr=recipe["lr"], warmup=recipe["warmup"],
                              weight_decay=recipe["weight_decay"], seed=recipe["seed"], progress=progress)
    seconds = time.perf_counter() - start
    accuracy = tinylm.next_token_accuracy(model, test_ids, recipe["seq_len"])
    state = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    file = f"{name}.pt"
    torch.save(state, out_dir / file)
    raw = (out_dir / file).read_bytes()
    tok = tinylm.tokenizer(rec["dataset_kwargs"]["vocab_size"]).to_str()
    entry = {
        **rec,
        "file": file,
        "test_accuracy": accuracy,
        "test_perplexity": perplexity(model, test_ids, seq_len=recipe["seq_len"]),
        "sample": tinylm.generate(model, LM_PROMPT, 40),
        "train_tokens": int(train_ids.numel()),
        "test_tokens": int(test_ids.numel()),
        "tokenizer_sha256": hashlib.sha256(tok.encode("utf-8")).hexdigest(),
        "num_parameters": count_params(model),
        "file_bytes": len(raw),
        "sha256": hashlib.sha256(raw).hexdigest(),
        "train_seconds": round(seconds, 1),
        "train_history": [{"step": i + 1, "loss": round(sum(history[i - 49:i + 1]) / 50, 6)}
                          for i in range(49, len(history), 50)],
        "built_with": {"torch": torch.__version__.split("+")[0], "threads": torch.get_num_threads()},
    }
    index = _read_index(out_dir)
    index[name] = entry
    _write_index(index, out_dir)
    return accuracy


def _index_path(directory: Path) -> Path:
    return directory / _INDEX


def _read_index(directory: Path = CHECKPOINT_DIR) -> dict[str, dict[str, Any]]:
    path = _index_path(directory)
    if not path.is_file():
        return {}
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _write_index(index: dict[str, dict[str, Any]], directory: Path) -> None:
    path = _index_path(directory)
    tmp = path.with_suffix(".json.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(index, f, indent=2, sort_keys=True)
        f.write("\n")
    os.replace(tmp, path)


def _locations() -> list[tuple[Path, dict[str, dict[str, Any]]]]:
    """``(directory, index)`` of the cache, then of the shipped checkpoints."""
    out = []
    for directory in (cache_dir(), CHECKPOINT_DIR):
        index = _read_index(directory)
        out.append((directory, {n: e for n, e in index.items() if (directory / e["file"]).is_file()}))
    return out


def _find(name: str) -> tuple[Path, dict[str, Any]]:
    """The directory and ``zoo.json`` entry of checkpoint ``name``: the cache's, else the shipped one."""
    _check_name(name, available())
    for directory, index in _locations():
        if name in index:
            return directory, index[name]
    raise AssertionError(name)  # unreachable: available() lists only names found here


def available() -> list[str]:
    """Names of the checkpoints built into the cache or shipped with the package (sorted)."""
    return sorted({n for _, index in _locations() for n in index})


def _check_name(name: Any, names: Sequence[str]) -> str:
    if not isinstance(name, str):
        raise TypeError(f"name must be a string, one of {', '.join(names)}; got {type(name).__name__}")
    if name not in names:
        raise ValueError(f"unknown checkpoint name {name!r}; available: {', '.join(names)}")
    return name


def info(name: str) -> dict[str, Any]:
    """The ``zoo.json`` entry of ``name`` (a copy): model, dataset, recipe, test accuracy, ...
    (from the cache if ``name`` was built there, else the shipped one)."""
    return copy.deepcopy(_find(name)[1])


def _build_model(entry: dict[str, Any]) -> nn.Module:
    return _MODELS[entry["model"]](**entry["model_kwargs"])


def load(name: str) -> nn.Module:
    """Build the model of checkpoint ``name``, load its weights and return it in eval mode.

    Weights are read with ``torch.load(..., weights_only=True)`` from the cache
    (:func:`cache_dir`) if ``name`` was built there, else from the package's files.
    """
    directory, entry = _find(name)
    model = _build_model(entry)
    state = torch.load(directory / entry["file"], map_location="cpu", weights_only=True)
    model.load_state_dict(state)
    return model.eval()


def loaders(name: str, **overrides: Any) -> tuple[Any, Any]:
    """``(train_loader, test_loader)`` of the data checkpoint ``name`` was trained on.

    Keyword arguments override the recorded dataset arguments (e.g. ``batch_size=256``).
    """
    entry = RECIPES[_check_name(name, sorted(RECIPES))]
    return _DATASETS[entry["dataset"]](**{**entry["dataset_kwargs"], **overrides})


def build(
    name: str,
    progress: bool = True,
    directory: str | os.PathLike | None = None,
    threads: int | None = 1,
) -> float:
    """Retrain checkpoint ``name`` from its recipe, save it and record its test accuracy.

    Writes ``<directory>/<name>.pt`` and updates ``<directory>/zoo.json``; ``directory``
    defaults to :func:`cache_dir` (the installed package is not written to unless
    ``directory`` is its ``checkpoints/`` folder, :data:`CHECKPOINT_DIR`). Returns the test
    accuracy in [0, 1]. Training runs on ``threads`` intra-op threads (default 1, restored
    afterwards): CPU kernels may sum in a different order with another thread count, so the
    shipped checkpoints were built, and are reproduced bit for bit on the same CPU, with one
    thread. ``None`` keeps torch's current setting. Wrong types raise ``TypeError``.
    """
    rec = copy.deepcopy(RECIPES[_check_name(name, sorted(RECIPES))])
    if not isinstance(progress, bool):
        raise TypeError(f"progress must be a bool, got {type(progress).__name__}")
    if threads is not None:
        check_int("threads", threads, 1)
    if directory is not None and not isinstance(directory, (str, os.PathLike)):
        raise TypeError(f"directory must be a path (str or os.PathLike) or None, got {type(directory).__name__}")
    out_dir = cache_dir() if directory is None else Path(directory)
    out_dir.mkdir(parents=True, exist_ok=True)
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        return _build(name, rec, out_dir, progress)
    finally:
        torch.set_num_threads(previous)


def _train(rec: dict[str, Any], seed: int, progress: bool) -> tuple[nn.Module, list[dict[str, float]], float]:
    """Build and train the model of recipe ``rec`` from ``seed``: (model, history, seconds)."""
    recipe = rec["recipe"]
    set_seed(seed)
    model = _build_model(rec)
    train_loader, _ = _DATASETS[rec["dataset"]](**rec["dataset_kwargs"])
    start = time.perf_counter()
    history = train(
        model,
        train_loader,
        epochs=recipe["epochs"],
        lr=recipe["lr"],
        optimizer=recipe["optimizer"],
        weight_decay=recipe["weight_decay"],
        lr_schedule=recipe["lr_schedule"],
        seed=seed,
        progress=progress,
    )
    return model, history, time.perf_counter() - start


def retrain(name: str, seed: int, progress: bool = False) -> nn.Module:
    """Train checkpoint ``name``'s model with its recipe from another ``seed`` (initial weights
    and batch order); with the recipe's own seed this rebuilds the checkpoint. For experiments
    whose spread over seeds should include the pretrained network's. Returns it in eval mode."""
    rec = RECIPES[_check_name(name, sorted(RECIPES))]
    if rec.get("kind") == "lm":
        raise ValueError(f"name: retrain supports the image checkpoints, got {name!r}")
    seed = check_int("seed", seed, minimum=0)
    return _train(rec, seed, progress)[0]


def _build(name: str, rec: dict[str, Any], out_dir: Path, progress: bool) -> float:
    if rec.get("kind") == "lm":
        return _build_lm(name, rec, out_dir, progress)
    model, history, seconds = _train(rec, rec["recipe"]["seed"], progress)
    _, test_loader = _DATASETS[rec["dataset"]](**rec["dataset_kwargs"])
    accuracy = evaluate(model, test_loader)
    state = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    file = f"{name}.pt"
    torch.save(state, out_dir / file)
    raw = (out_dir / file).read_bytes()
    entry = {
        **rec,
        "file": file,
        "test_accuracy": accuracy,
        "num_parameters": count_params(model),
        "file_bytes": len(raw),
        "sha256": hashlib.sha256(raw).hexdigest(),
        "train_seconds": round(seconds, 1),
        "train_history": [{k: round(float(v), 6) for k, v in h.items()} for h in history],
        "built_with": {"torch": torch.__version__.split("+")[0], "threads": torch.get_num_threads()},
    }
    index = _read_index(out_dir)
    index[name] = entry
    _write_index(index, out_dir)
    return accuracy


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``python -m prunekit.zoo {list, info NAME, build NAME|all [--quiet]}``."""
    parser = argparse.ArgumentParser(prog="python -m prunekit.zoo", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="list the shipped checkpoints")
    p_info = sub.add_parser("info", help="print a checkpoint's zoo.json entry")
    p_info.add_argument("name")
    p_build = sub.add_parser("build", help="retrain a checkpoint (or 'all') from its recipe")
    p_build.add_argument("name", help=f"one of {', '.join(sorted(RECIPES))}, or 'all'")
    p_build.add_argument("--quiet", action="store_true", help="no progress bars")
    p_build.add_argument("--dir", default=None,
                         help="output folder (default: the cache, $PRUNEKIT_CACHE or ~/.cache/prunekit)")
    p_build.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    args = parser.parse_args(argv)
    try:
        if args.command == "list":
            for n in available():
                e = info(n)
                print(f"{n:15s} {e['model']:9s} {e['dataset']:7s} "
                      f"acc={100 * e['test_accuracy']:.2f}%  params={e['num_parameters']}")
        elif args.command == "info":
            print(json.dumps(info(args.name), indent=2))
        else:
            names = sorted(RECIPES) if args.name == "all" else [args.name]
            for n in names:
                acc = build(n, progress=not args.quiet, directory=args.dir, threads=args.threads)
                print(f"{n}: test accuracy {100 * acc:.2f}%")
    except (TypeError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
