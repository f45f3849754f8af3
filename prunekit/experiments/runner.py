"""Named, seeded experiments whose results are cached on disk by the hash of their configuration.

An :class:`Experiment` is a name, a configuration (model, data, method, sparsities, seeds,
fine-tuning budget ...) and a ``trial(config, seed) -> rows`` function that runs *one seed* and
returns plain rows such as ``{"setting": "global", "sparsity": 0.9, "accuracy": 0.95}``.
:func:`run` runs every seed, or finds it in a cache: each trial is stored under the hash of
``(name, version, config without the seeds, seed)``, so changing any setting recomputes, while
adding a seed computes only that seed. :meth:`Result.summary` then gives each metric's mean and
spread over the seeds -- the honest comparison ShrinkBench asks for (Blalock et al. 2020,
"What is the state of neural network pruning?": same budget, same fine-tuning, several
seeds, report the spread).

Two caches are searched, in order: the user's (``$PRUNEKIT_CACHE/experiments``, else
``~/.cache/prunekit/experiments``; computed trials are written there) and the results that ship
with prunekit (``prunekit/experiments/results/<name>.json``), so the book shows every table
without recomputing. From a shell::

    python -m prunekit.experiments list
    python -m prunekit.experiments run layerwise-vs-global          # cached trials are reused
    python -m prunekit.experiments run all --force --cache-dir prunekit/experiments/results

Example:
    >>> from prunekit.experiments import runner
    >>> exp = runner.Experiment(
    ...     "doc-demo", "a demo", lambda cfg, seed: [{"setting": "a", "value": cfg["k"] * seed}],
    ...     config={"k": 2, "seeds": [1, 2, 3]}, keys=("setting",), metrics=("value",))
    >>> import tempfile
    >>> result = runner.run(exp, cache_dir=tempfile.mkdtemp(), progress=False)
    >>> result.stat("value", setting="a")
    Stat(mean=4.0, std=2.0, n=3)
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import torch
from tqdm.auto import tqdm

from ..zoo import cache_root

__all__ = [
    "Experiment",
    "Result",
    "SHIPPED_DIR",
    "Stat",
    "available",
    "default_cache_dir",
    "get",
    "register",
    "run",
    "run_trial",
    "trial_key",
]

SHIPPED_DIR: Path = Path(__file__).resolve().parent / "results"

Rows = list[dict[str, Any]]
_REGISTRY: dict[str, "Experiment"] = {}


def default_cache_dir() -> Path:
    """Where :func:`run` writes computed trials by default: ``$PRUNEKIT_CACHE/experiments``,
    else ``~/.cache/prunekit/experiments``."""
    return cache_root() / "experiments"


@dataclass(frozen=True)
class Experiment:
    """A named experiment: ``trial(config, seed)`` returns the rows of one seed.

    Args:
        name: a short lower-case name (``"oneshot-vs-iterative"``), the cache file's name.
        title: one line for tables and ``list``.
        trial: ``(config, seed) -> rows``; every row holds each of ``keys`` and ``metrics``,
            with JSON-able values. It must be deterministic given the seed (the runner fixes
            torch to one thread while it runs).
        config: the defaults, including ``"seeds"`` (a list of ints).
        keys: the columns that identify a row (e.g. ``("setting", "sparsity")``).
        metrics: the measured columns, summarised over seeds.
        quick: overrides for a tiny smoke-test configuration (tests, ``--quick``).
        noisy: metrics that vary from run to run (timings): excluded from equality checks.
        version: bump it when the code changes the results; it is part of the cache key.
    """

    name: str
    title: str
    trial: Callable[[dict[str, Any], int], Rows]
    config: Mapping[str, Any]
    keys: tuple[str, ...]
    metrics: tuple[str, ...]
    quick: Mapping[str, Any] = field(default_factory=dict)
    noisy: tuple[str, ...] = ()
    version: int = 1

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name or self.name != self.name.strip():
            raise ValueError(f"name must be a non-empty string, got {self.name!r}")
        if not callable(self.trial):
            raise TypeError(f"trial must be callable, got {type(self.trial).__name__}")
        _check_seeds(self.config.get("seeds"))
        unknown = set(self.quick) - set(self.config)
        if unknown:
            raise ValueError(f"quick overrides unknown config keys {sorted(unknown)}")
        for what in ("keys", "metrics"):
            cols = getattr(self, what)
            if not cols or not all(isinstance(c, str) for c in cols):
                raise ValueError(f"{what} must be a non-empty tuple of column names, got {cols!r}")
        if set(self.noisy) - set(self.metrics):
            raise ValueError(f"noisy must name metrics, got {self.noisy!r}")

    def configure(self, overrides: Mapping[str, Any] | None = None, *, quick: bool = False) -> dict[str, Any]:
        """The full configuration: defaults, then ``quick`` overrides, then ``overrides``.
        An override of a key the experiment does not have is a ``ValueError``."""
        cfg = copy.deepcopy(dict(self.config))
        if quick:
            cfg.update(copy.deepcopy(dict(self.quick)))
        if overrides is not None:
            if not isinstance(overrides, Mapping):
                raise TypeError(f"config must be a mapping of overrides, got {type(overrides).__name__}")
            unknown = sorted(set(overrides) - set(cfg))
            if unknown:
                raise ValueError(f"config: unknown keys {unknown} for experiment {self.name!r}; "
                                 f"allowed: {sorted(cfg)}")
            cfg.update(copy.deepcopy(dict(overrides)))
        cfg["seeds"] = _check_seeds(cfg.get("seeds"))
        return cfg


@dataclass(frozen=True)
class Stat:
    """Mean and sample standard deviation (``n - 1``; 0 for one seed) over ``n`` seeds."""

    mean: float
    std: float
    n: int

    @classmethod
    def of(cls, values: Sequence[float]) -> "Stat":
        vals = [float(v) for v in values]
        std = statistics.stdev(vals) if len(vals) > 1 else 0.0
        return cls(mean=round(statistics.fmean(vals), 12), std=round(std, 12), n=len(vals))

    def format(self, fmt: str = "{:.3f}") -> str:
        """``"0.951 ± 0.004"`` (``fmt`` formats both numbers)."""
        return f"{fmt.format(self.mean)} ± {fmt.format(self.std)}"


@dataclass
class Result:
    """The trials of one experiment: ``trials[seed]`` is that seed's rows."""

    experiment: Experiment
    config: dict[str, Any]
    trials: dict[int, Rows]
    hits: int = 0
    misses: int = 0

    @property
    def seeds(self) -> list[int]:
        return list(self.trials)

    def rows(self) -> Rows:
        """Every row of every seed, with a ``"seed"`` column."""
        return [{"seed": s, **row} for s, rows in self.trials.items() for row in rows]

    def groups(self) -> list[tuple[Any, ...]]:
        """The distinct key tuples, in the order the first seed produced them."""
        seen: dict[tuple[Any, ...], None] = {}
        for rows in self.trials.values():
            for row in rows:
                seen.setdefault(tuple(row[k] for k in self.experiment.keys), None)
        return list(seen)

    def values(self, metric: str, **keys: Any) -> list[float]:
        """The per-seed values of ``metric`` in the row matching ``keys`` (all key columns)."""
        self._check_metric(metric)
        missing = set(self.experiment.keys) - set(keys)
        unknown = set(keys) - set(self.experiment.keys)
        if missing or unknown:
            raise ValueError(f"give exactly the key columns {list(self.experiment.keys)}; "
                             f"missing {sorted(missing)}, unknown {sorted(unknown)}")
        out = [row[metric] for rows in self.trials.values() for row in rows
               if all(row[k] == v for k, v in keys.items())]
        if not out:
            raise ValueError(f"no row with {keys} in {self.experiment.name!r}")
        return out

    def stat(self, metric: str, **keys: Any) -> Stat:
        """Mean ± spread of ``metric`` over the seeds, in the row matching ``keys``."""
        return Stat.of(self.values(metric, **keys))

    def summary(self) -> Rows:
        """One row per key tuple: the keys, then a :class:`Stat` per metric."""
        out = []
        for group in self.groups():
            keys = dict(zip(self.experiment.keys, group))
            row: dict[str, Any] = dict(keys)
            for m in self.experiment.metrics:
                row[m] = self.stat(m, **keys)
            out.append(row)
        return out

    def table(self, metrics: Sequence[str] | None = None, fmt: str | Mapping[str, str] = "{:.3f}",
              where: Mapping[str, Any] | None = None) -> str:
        """A Markdown table of the summary: key columns, then ``mean ± std`` per metric, and
        a line saying over how many seeds.

        ``fmt`` is one format for all metrics or a ``{metric: format}`` mapping; ``where``
        keeps the rows whose key columns have the given values."""
        metrics = list(self.experiment.metrics if metrics is None else metrics)
        for m in metrics:
            self._check_metric(m)
        keys = [k for k in self.experiment.keys if not where or k not in where]
        n = len(self.trials)
        head = keys + [m.replace("_", " ") for m in metrics]
        lines = ["| " + " | ".join(head) + " |",
                 "|" + "|".join(["---"] * len(keys) + ["---:"] * len(metrics)) + "|"]
        for row in self.summary():
            if where and any(row[k] != v for k, v in where.items()):
                continue
            cells = [str(row[k]) for k in keys]
            for m in metrics:
                f = fmt.get(m, "{:.3f}") if isinstance(fmt, Mapping) else fmt
                cells.append(row[m].format(f))
            lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines) + f"\n\nMean ± standard deviation over {n} seed{'s' * (n != 1)}."

    def same_as(self, other: "Result | Mapping[int, Rows]") -> bool:
        """Whether both hold the same rows for the seeds they share (``noisy`` metrics ignored)."""
        trials = other.trials if isinstance(other, Result) else other
        shared = set(self.trials) & set(trials)
        return bool(shared) and all(
            _strip(self.trials[s], self.experiment.noisy) == _strip(trials[s], self.experiment.noisy)
            for s in shared)

    def _check_metric(self, metric: str) -> None:
        if metric not in self.experiment.metrics:
            raise ValueError(f"metric must be one of {list(self.experiment.metrics)}, got {metric!r}")


# ----------------------------------------------------------------------------- registry
def register(experiment: Experiment) -> Experiment:
    """Add ``experiment`` to the registry (its name must be new); return it."""
    if not isinstance(experiment, Experiment):
        raise TypeError(f"experiment must be an Experiment, got {type(experiment).__name__}")
    if experiment.name in _REGISTRY and _REGISTRY[experiment.name] is not experiment:
        raise ValueError(f"an experiment named {experiment.name!r} is already registered")
    _REGISTRY[experiment.name] = experiment
    return experiment


def _load_builtin() -> None:
    from . import contrasts  # noqa: F401  (registers the eight contrasts)
    from . import quant_order  # noqa: F401  (registers "prune-quantize-order", chapter "Fusion")


def available() -> list[str]:
    """The names of the registered experiments."""
    _load_builtin()
    return list(_REGISTRY)


def get(name: str) -> Experiment:
    """The registered experiment called ``name``."""
    _load_builtin()
    if not isinstance(name, str) or name not in _REGISTRY:
        raise ValueError(f"experiment must be one of {list(_REGISTRY)}, got {name!r}")
    return _REGISTRY[name]


# ----------------------------------------------------------------------------- cache
def trial_key(experiment: Experiment, config: Mapping[str, Any], seed: int) -> str:
    """The cache key of one trial: a hash of the name, version, configuration (without the
    list of seeds) and seed."""
    spec = {"experiment": experiment.name, "version": experiment.version, "seed": int(seed),
            "config": {k: v for k, v in config.items() if k != "seeds"}}
    text = json.dumps(spec, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _read(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def _write(path: Path, experiment: Experiment, new: Mapping[str, Any]) -> None:
    """Merge ``new`` trials into the cache file at ``path`` (written atomically)."""
    doc = _read(path)
    trials = {**doc.get("trials", {}), **new}
    doc = {"experiment": experiment.name, "title": experiment.title,
           "version": experiment.version, "trials": dict(sorted(trials.items()))}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{time.time_ns()}")
    tmp.write_text(json.dumps(doc, indent=1) + "\n")
    tmp.replace(path)


# ----------------------------------------------------------------------------- running
def _check_seeds(seeds: Any) -> list[int]:
    if (not isinstance(seeds, (list, tuple)) or not seeds
            or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds)
            or len(set(seeds)) != len(seeds)):
        raise ValueError(f"seeds must be a non-empty list of distinct ints >= 0, got {seeds!r}")
    return list(seeds)


def _strip(rows: Rows, noisy: Iterable[str]) -> Rows:
    drop = set(noisy)
    return [{k: v for k, v in row.items() if k not in drop} for row in rows]


def _check_rows(experiment: Experiment, rows: Any) -> Rows:
    if not isinstance(rows, list) or not rows or not all(isinstance(r, dict) for r in rows):
        raise TypeError(f"{experiment.name}: trial must return a non-empty list of dicts")
    need = set(experiment.keys) | set(experiment.metrics)
    for row in rows:
        if need - set(row):
            raise ValueError(f"{experiment.name}: a row lacks {sorted(need - set(row))}: {row}")
        for m in experiment.metrics:
            if not isinstance(row[m], (int, float)) or isinstance(row[m], bool) or not math.isfinite(row[m]):
                raise ValueError(f"{experiment.name}: metric {m!r} must be a finite number, got {row[m]!r}")
    # a JSON round trip: what is returned live is exactly what the cache would give back
    return json.loads(json.dumps(rows))


def run_trial(experiment: Experiment | str, config: Mapping[str, Any], seed: int) -> Rows:
    """Run one seed of ``experiment`` with the full ``config`` (no cache), on one torch thread."""
    exp = get(experiment) if isinstance(experiment, str) else experiment
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _check_rows(exp, exp.trial(copy.deepcopy(dict(config)), seed))
    finally:
        torch.set_num_threads(threads)


def run(
    experiment: Experiment | str,
    config: Mapping[str, Any] | None = None,
    *,
    seeds: Sequence[int] | None = None,
    quick: bool = False,
    force: bool = False,
    cache_dir: str | Path | None = None,
    shipped: bool = True,
    compute: bool = True,
    progress: bool = True,
) -> Result:
    """Run ``experiment`` (an :class:`Experiment` or a registered name) over its seeds.

    Args:
        config: overrides of the experiment's configuration (unknown keys are a ``ValueError``).
        seeds: the seeds to run (default: the configuration's ``"seeds"``).
        quick: start from the experiment's tiny smoke-test configuration.
        force: recompute every trial even when it is cached.
        cache_dir: where to look first and to write computed trials (default :func:`default_cache_dir`).
        shipped: also look in the results that ship with prunekit.
        compute: ``False``: only collect cached trials (missing seeds are left out).
        progress: a tqdm bar over the trials.

    Returns:
        A :class:`Result`; ``hits`` and ``misses`` count the cached and computed trials.
        Arguments are checked before anything runs.
    """
    exp = get(experiment) if isinstance(experiment, str) else experiment
    if not isinstance(exp, Experiment):
        raise TypeError(f"experiment must be an Experiment or a name, got {type(experiment).__name__}")
    for flag, value in (("quick", quick), ("force", force), ("shipped", shipped),
                        ("compute", compute), ("progress", progress)):
        if not isinstance(value, bool):
            raise TypeError(f"{flag} must be a bool, got {type(value).__name__}")
    cfg = exp.configure(config, quick=quick)
    if seeds is not None:
        cfg["seeds"] = _check_seeds(list(seeds) if isinstance(seeds, tuple) else seeds)
    if cache_dir is not None and not isinstance(cache_dir, (str, Path)):
        raise TypeError(f"cache_dir must be a path or None, got {type(cache_dir).__name__}")
    path = Path(cache_dir if cache_dir is not None else default_cache_dir()) / f"{exp.name}.json"
    cached: dict[str, Any] = {}
    if not force:
        if shipped:
            cached.update(_read(SHIPPED_DIR / f"{exp.name}.json").get("trials", {}))
        cached.update(_read(path).get("trials", {}))
    result = Result(exp, cfg, {})
    for seed in tqdm(cfg["seeds"], desc=exp.name, disable=not progress):
        key = trial_key(exp, cfg, seed)
        if key in cached:
            result.trials[seed] = cached[key]["rows"]
            result.hits += 1
            continue
        if not compute:
            continue
        start = time.perf_counter()
        rows = run_trial(exp, cfg, seed)
        _write(path, exp, {key: {"seed": seed, "seconds": round(time.perf_counter() - start, 1),
                                 "config": {k: v for k, v in cfg.items() if k != "seeds"},
                                 "rows": rows}})
        result.trials[seed] = rows
        result.misses += 1
    return result
