"""MetaPruning-style search: a PruningNet generates the weights of any width configuration (toy scale).

Liu, Mu, Zhang, Guo, Yang, Cheng & Sun, "MetaPruning: Meta Learning for Automatic Neural
Network Channel Pruning", ICCV 2019 -- the meta-learning branch of "learning to prune" in
Cheng, Zhang & Shi's survey (arXiv 2308.06767).

The method, as implemented here for VGG-style CNNs described by an :class:`Architecture`
(``[3x3 conv (no bias) -> BatchNorm -> ReLU -> 2x2 max-pool] * len(widths)``, global average
pooling, an optional hidden ``Linear -> ReLU``, a ``Linear`` classifier). The caller passes
``architecture=``, or the model supplies it with a ``pruningnet_architecture()`` method (the
book's ``SmallCNN`` does, in ``prunekit/models.py``); the library knows no model class.
    1. **PruningNet** (:class:`PruningNet`). A network encoding vector holds the number of
       channels of every searched layer (the conv widths and the hidden Linear), each
       divided by its full width. For every layer of the pruned network a small
       fully-connected block (``Linear(L, meta_hidden) -> ReLU -> Linear(meta_hidden, size)``)
       maps the encoding to the weights of that layer at *full* size, which are cropped to
       the sampled widths (the first ``k_out`` filters, the first ``k_in`` input channels).
       The pruned network is then run with these generated weights.
    2. **Training** (:func:`train_pruningnet`). Every step samples a new random width
       configuration (each layer uniformly from a grid of ``levels`` widths) and a
       mini-batch, and trains the PruningNet end to end with cross-entropy through the
       generated weights. The BatchNorms use batch statistics during training.
    3. **Evolutionary search** (:func:`evolutionary_search`). Candidates are width
       configurations; fitness = accuracy on a validation batch of the network with the
       PruningNet-generated weights and *no fine-tuning*, after re-estimating the BatchNorm
       statistics on a calibration batch of training data (as the official code does). The
       first population is random; every generation keeps the ``top_k`` best candidates
       seen so far and builds the next population by mutation (each gene changed with
       probability ``mutation_prob``), crossover (uniform, two top-k parents) and random
       candidates; a candidate over the MAC budget, or already tested, is rejected and
       re-sampled. Because the top-k memory is kept, the best fitness never decreases.

What is simplified for toy scale
    * A few hundred training steps on scikit-learn digits (seconds), a population of 16 for
      ~10 generations (the paper: 50 x 20 on ImageNet, a PruningNet trained for 32 epochs).
    * Every block sees the whole encoding vector (the paper's description); the official
      code feeds each block only its own input/output width ratios. The BatchNorms are
      affine-free with statistics re-estimated per candidate (the official code keeps one
      BatchNorm per width choice in training and re-calibrates in search).
    * The width grid is ``levels`` fractions ``j / levels`` of each layer (the paper: 31
      ratios 0.1..1.0 of MobileNet's widths).
    * Applying the result (:meth:`PruningNet.build`): a fresh model of the searched widths
      (made by ``Architecture.make``) whose weights are the PruningNet's generated ones (BatchNorm statistics from the
      calibration batch) -- no fine-tuning. The paper trains the winner from scratch;
      ``pk.train.train(built, train_loader, epochs=...)`` does that (or fine-tunes it).
    * The pretrained model passed in only defines the architecture and the MAC count; the
      PruningNet is trained from scratch, as in the paper.

>>> import torch, prunekit as pk
>>> from prunekit.methods.learned.metapruning import metapruning_search
>>> train_loader, _ = pk.zoo.loaders("cnn-digits")
>>> res = metapruning_search(pk.zoo.load("cnn-digits"), torch.zeros(1, 1, 8, 8), train_loader, budget=0.5,
...                          steps=20, generations=2, population=8, progress=False)
>>> len(res.history), res.best_mac_fraction <= 0.5
(2, True)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ..._validate import check_int, check_model, check_number
from .search_space import SearchResult, SearchSpace, check_budget

__all__ = ["Architecture", "PruningNet", "architecture_of", "train_pruningnet", "evolutionary_search",
           "metapruning_search", "width_choices", "split_batches"]

_BN_EPS = 1e-5


@dataclass(frozen=True)
class Architecture:
    """The network a :class:`PruningNet` generates, described for MetaPruning.

    ``[3x3 conv (padding 1, no bias) -> BatchNorm2d -> ReLU -> 2x2 max-pool]`` for each of
    ``widths``, global average pooling, then ``Linear(widths[-1], hidden) -> ReLU`` if
    ``hidden`` is not ``None``, and ``Linear(., num_classes)``. ``layers`` names the searched
    layers of the model (its convs, then the hidden Linear), as a :class:`SearchSpace` of the
    model lists them. ``make(widths, hidden)`` returns a fresh model of that family with other
    widths; :meth:`PruningNet.build` fills it with generated weights (its ``Conv2d``,
    ``BatchNorm2d`` and ``Linear`` modules, in module order). Without ``make``, ``build`` is
    unavailable but training and search work.
    """

    in_channels: int
    widths: tuple[int, ...]
    hidden: int | None
    num_classes: int
    layers: tuple[str, ...]
    make: Callable[[tuple[int, ...], int | None], nn.Module] | None = None

    def __post_init__(self) -> None:
        check_int("in_channels", self.in_channels, minimum=1)
        check_int("num_classes", self.num_classes, minimum=1)
        if not isinstance(self.widths, tuple) or not self.widths:
            raise TypeError(f"widths must be a non-empty tuple of ints, got {self.widths!r}")
        for w in self.widths:
            check_int("widths[i]", w, minimum=1)
        if self.hidden is not None:
            check_int("hidden", self.hidden, minimum=1)
        n = len(self.widths) + (self.hidden is not None)
        if not isinstance(self.layers, tuple) or len(self.layers) != n or not all(isinstance(x, str) for x in self.layers):
            raise ValueError(f"layers must be a tuple of {n} layer names (the convs, then the hidden Linear), "
                             f"got {self.layers!r}")
        if self.make is not None and not callable(self.make):
            raise TypeError(f"make must be a callable make(widths, hidden) -> nn.Module, got {type(self.make).__name__}")


def architecture_of(model: Any, architecture: Architecture | None = None) -> Architecture:
    """``architecture`` if given, else ``model.pruningnet_architecture()``; ``TypeError`` if neither."""
    if architecture is not None:
        if not isinstance(architecture, Architecture):
            raise TypeError(f"architecture must be a metapruning.Architecture, got {type(architecture).__name__}")
        return architecture
    check_model(model)
    describe = getattr(model, "pruningnet_architecture", None)
    if not callable(describe):
        raise TypeError(f"a PruningNet needs the architecture of the {type(model).__name__}: pass "
                        "architecture=metapruning.Architecture(...) or give the model a pruningnet_architecture() "
                        "method (as prunekit.models.SmallCNN has)")
    arch = describe()
    if not isinstance(arch, Architecture):
        raise TypeError(f"{type(model).__name__}.pruningnet_architecture() must return a metapruning.Architecture, "
                        f"got {type(arch).__name__}")
    return arch


def width_choices(sizes: Sequence[int], levels: int) -> list[list[int]]:
    """Per layer, the sorted distinct widths ``max(1, round(c * j / levels))``, ``j = 1..levels``."""
    levels = check_int("levels", levels, minimum=1)
    return [sorted({max(1, round(c * j / levels)) for j in range(1, levels + 1)}) for c in sizes]


class PruningNet(nn.Module):
    """Generates the weights of a network of the :class:`Architecture` family, of any widths.

    The searched widths are ``widths`` of the convs plus ``hidden`` (if the classifier has a
    hidden layer): ``full`` lists their full sizes. ``forward(x, kept)`` runs the pruned
    network with generated weights; ``kept`` is one width per searched layer. ``make``
    (``make(widths, hidden) -> nn.Module``) is what :meth:`build` fills.
    """

    def __init__(self, in_channels: int = 1, widths: Sequence[int] = (16, 32, 64), hidden: int | None = 64,
                 num_classes: int = 10, meta_hidden: int = 32,
                 make: Callable[[tuple[int, ...], int | None], nn.Module] | None = None) -> None:
        super().__init__()
        self.in_channels, self.widths, self.hidden, self.num_classes = in_channels, tuple(widths), hidden, num_classes
        self.make = make
        self.full = tuple(widths) + ((hidden,) if hidden is not None else ())
        n = len(self.full)
        shapes = []  # (out, in, kernel elements) of every generated layer at full size
        c = in_channels
        for w in widths:
            shapes.append((w, c, 9))
            c = w
        if hidden is not None:
            shapes.append((hidden, c, 1))
            c = hidden
        shapes.append((num_classes, c, 1))
        self.shapes = tuple(shapes)
        self.blocks = nn.ModuleList()
        for i, (o, ci, k) in enumerate(shapes):
            bias = i >= len(widths)  # Linear layers have a bias; the convs are bias-free (BatchNorm follows)
            out = nn.Linear(meta_hidden, o * ci * k + (o if bias else 0))
            # initialisation: the output layer's bias is a He-initialised weight tensor (the
            # generated network starts as an ordinary randomly initialised network) and its
            # weight is small, so the encoding modulates that base; Adam then moves the
            # generated weights at the learning rate itself
            std = math.sqrt(2.0 / (ci * k))
            with torch.no_grad():
                out.bias.normal_(0.0, std)
                if bias:
                    out.bias[o * ci * k:].zero_()
                out.weight.normal_(0.0, 0.1 * std)
            self.blocks.append(nn.Sequential(nn.Linear(n, meta_hidden), nn.ReLU(), out))

    @classmethod
    def from_model(cls, model: nn.Module, meta_hidden: int = 32,
                   architecture: Architecture | None = None) -> "PruningNet":
        """A PruningNet for the architecture of ``model`` (see :func:`architecture_of`)."""
        a = architecture_of(model, architecture)
        return cls(a.in_channels, a.widths, a.hidden, a.num_classes, meta_hidden, a.make)

    def check_kept(self, kept: Sequence[int], arg: str = "kept") -> tuple[int, ...]:
        if len(kept) != len(self.full):
            raise ValueError(f"{arg} must have one width per searched layer ({len(self.full)}), got {len(kept)}")
        out = []
        for i, (k, c) in enumerate(zip(kept, self.full)):
            k = int(k)
            if not 1 <= k <= c:
                raise ValueError(f"{arg}[{i}] must be in 1..{c}, got {k}")
            out.append(k)
        return tuple(out)

    def encoding(self, kept: Sequence[int]) -> torch.Tensor:
        """The network encoding vector: kept channels / full channels, per searched layer."""
        return torch.tensor([k / c for k, c in zip(kept, self.full)], dtype=torch.float32)

    def generate(self, kept: Sequence[int]) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
        """``(weight, bias)`` of every layer, cropped to ``kept`` (bias ``None`` for the convs)."""
        kept = self.check_kept(kept)
        enc = self.encoding(kept)
        outs = list(kept) + [self.num_classes]
        ins = [self.in_channels] + list(kept)
        params = []
        for i, (block, (o, ci, k)) in enumerate(zip(self.blocks, self.shapes)):
            flat = block(enc)
            w = flat[: o * ci * k].view(o, ci, k)[: outs[i], : ins[i]]
            if i < len(self.widths):
                params.append((w.reshape(outs[i], ins[i], 3, 3), None))
            else:
                params.append((w.reshape(outs[i], ins[i]), flat[o * ci * k:][: outs[i]]))
        return params

    def forward(self, x: torch.Tensor, kept: Sequence[int], stats: list | None = None,
                collect: list | None = None) -> torch.Tensor:
        """Logits of the pruned network with generated weights.

        BatchNorm: with ``stats`` (a list of ``(mean, var)`` per conv) those statistics are
        used (eval); otherwise batch statistics are used, and appended to ``collect`` if given.
        """
        params = self.generate(kept)
        n_conv = len(self.widths)
        for i in range(n_conv):
            w, _ = params[i]
            x = F.conv2d(x, w, padding=1)
            if stats is not None:
                mean, var = stats[i]
            else:
                mean, var = x.mean((0, 2, 3)), x.var((0, 2, 3), unbiased=False)
                if collect is not None:
                    collect.append((mean.detach(), var.detach()))
            x = (x - mean[None, :, None, None]) / torch.sqrt(var[None, :, None, None] + _BN_EPS)
            x = F.max_pool2d(F.relu(x), 2)
        x = x.mean((2, 3))
        for j, (w, b) in enumerate(params[n_conv:]):
            x = F.linear(x, w, b)
            if j < len(params) - n_conv - 1:
                x = F.relu(x)
        return x

    @torch.no_grad()
    def calibrate(self, kept: Sequence[int], inputs: torch.Tensor) -> list:
        """BatchNorm statistics of the configuration ``kept`` on ``inputs`` (a calibration batch)."""
        stats: list = []
        self.forward(inputs, kept, collect=stats)
        return stats

    @torch.no_grad()
    def accuracy(self, kept: Sequence[int], batch: tuple[torch.Tensor, torch.Tensor],
                 calibration: torch.Tensor) -> float:
        """Fitness: accuracy on ``batch`` with generated weights, BatchNorm re-estimated on ``calibration``."""
        stats = self.calibrate(kept, calibration)
        x, y = batch
        return float((self.forward(x, kept, stats).argmax(1) == y).float().mean())

    @torch.no_grad()
    def build(self, kept: Sequence[int], calibration: torch.Tensor) -> nn.Module:
        """A model of widths ``kept`` (made by ``make``) holding the generated weights (eval mode).

        Its BatchNorms have ``gamma = 1``, ``beta = 0`` and the statistics of ``calibration``,
        so it computes exactly what ``forward(x, kept, calibrate(kept, calibration))`` does.
        """
        kept = self.check_kept(kept)
        if self.make is None:
            raise ValueError("build needs the PruningNet's make(widths, hidden): create it with "
                             "PruningNet.from_model(...) or PruningNet(..., make=...)")
        n_conv = len(self.widths)
        model = self.make(tuple(kept[:n_conv]), kept[n_conv] if self.hidden is not None else None)
        params = self.generate(kept)
        stats = self.calibrate(kept, calibration)
        convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
        bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
        linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
        shapes = [tuple(m.weight.shape) for m in convs + linears]
        if (len(convs) != n_conv or len(bns) != n_conv or shapes != [tuple(w.shape) for w, _ in params]
                or any(lin.bias is None for lin in linears)):
            raise ValueError(f"make({list(kept[:n_conv])}, ...) built a {type(model).__name__} whose Conv2d and Linear "
                             f"weights have shapes {shapes} and {len(bns)} BatchNorm2d; the PruningNet generates "
                             f"{[tuple(w.shape) for w, _ in params]} (Linear layers with a bias) and {n_conv} "
                             "BatchNorm2d")
        for i, (conv, bn) in enumerate(zip(convs, bns)):
            conv.weight.copy_(params[i][0])
            bn.weight.fill_(1.0)
            bn.bias.zero_()
            bn.running_mean.copy_(stats[i][0])
            bn.running_var.copy_(stats[i][1])
            bn.eps = _BN_EPS
        for lin, (w, b) in zip(linears, params[n_conv:]):
            lin.weight.copy_(w)
            lin.bias.copy_(b)
        return model.eval()


def split_batches(train_loader: Any, n_val: int, seed: int) -> tuple[tuple, tuple]:
    """``((x_train, y_train), (x_val, y_val))``: ``n_val`` seeded examples split off the loader's dataset."""
    dataset = getattr(train_loader, "dataset", train_loader)
    if not hasattr(dataset, "tensors"):
        raise TypeError("train_loader must be a DataLoader over a TensorDataset (e.g. pk.zoo.loaders(name)[0])")
    x, y = dataset.tensors[0], dataset.tensors[1]
    n_val = check_int("n_val", n_val, minimum=1)
    if n_val >= len(x):
        raise ValueError(f"n_val must be smaller than the training set ({len(x)}), got {n_val}")
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    val, tr = perm[:n_val].sort().values, perm[n_val:].sort().values
    return (x[tr], y[tr]), (x[val], y[val])


def train_pruningnet(net: PruningNet, data: tuple[torch.Tensor, torch.Tensor], steps: int = 300, *,
                     batch_size: int = 64, lr: float = 3e-3, levels: int = 10, seed: int = 0,
                     progress: bool = True) -> list[float]:
    """Train ``net`` with a random width configuration per step (``data = (inputs, targets)``).

    Returns the loss of every step. Seeded: the configurations and mini-batches come from a
    generator seeded with ``seed``.

    This is not :func:`prunekit.train.train`'s loop, on purpose: a PruningNet is a supernet
    whose forward pass takes a width configuration drawn anew every step (``net(x, kept)``,
    not ``model(x)``), and its mini-batches are drawn with replacement from tensors by the same
    generator, interleaved with the configurations.
    """
    steps = check_int("steps", steps, minimum=1)
    batch_size = check_int("batch_size", batch_size, minimum=1)
    lr = check_number("lr", lr, low=0.0, low_open=True)
    choices = width_choices(net.full, levels)
    x, y = data
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(net.parameters(), lr=lr, foreach=True)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    losses = []
    net.train()
    bar = tqdm(range(steps), disable=not progress, desc="PruningNet")
    for _ in bar:
        kept = [ch[int(torch.randint(len(ch), (), generator=gen))] for ch in choices]
        idx = torch.randint(len(x), (batch_size,), generator=gen)
        loss = F.cross_entropy(net(x[idx], kept), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
        bar.set_postfix(loss=f"{losses[-1]:.3f}")
    bar.close()
    net.eval()
    return losses


def evolutionary_search(net: PruningNet, space: SearchSpace, batch: tuple[torch.Tensor, torch.Tensor],
                        calibration: torch.Tensor, budget: float = 0.5, *, generations: int = 10,
                        population: int = 16, top_k: int = 4, mutation_prob: float = 0.1, levels: int = 10,
                        seed: int = 0, max_tries: int = 2000, progress: bool = True) -> SearchResult:
    """MetaPruning's evolutionary search over width configurations under a MAC ``budget``.

    ``space`` must be the :class:`SearchSpace` of the same architecture (its layers are the
    PruningNet's searched layers, in order). Returns a ``SearchResult`` with one history entry
    per generation: ``reward`` / ``best_fitness`` (best so far, non-decreasing),
    ``mean_fitness`` (this generation's candidates), ``mac_fraction`` of the best, ``ratios``
    and ``kept`` of the best, ``mean_mac_fraction`` of the generation. Among candidates of
    equal fitness the one with fewer MACs ranks first (then the one found first).
    ``extra`` adds ``best_kept``, the final ``top`` list, the number ``tested``, and for
    comparison the fitness of the uniform allocation of the same budget under the same
    PruningNet (``uniform_kept``, ``uniform_fitness``).
    """
    budget = check_budget(budget)
    generations = check_int("generations", generations, minimum=1)
    population = check_int("population", population, minimum=2)
    top_k = check_int("top_k", top_k, minimum=2)
    mutation_prob = check_number("mutation_prob", mutation_prob, low=0.0, high=1.0)
    if tuple(space.sizes) != tuple(net.full):
        raise ValueError(f"space has layers of sizes {space.sizes} but the PruningNet generates {net.full}")
    choices = width_choices(net.full, levels)
    limit = math.floor(budget * space.total_macs + 1e-9)
    if space.macs_of_kept([ch[0] for ch in choices]) > limit:
        raise ValueError(f"budget={budget:g} is unreachable with the narrowest widths of the grid "
                         f"(levels={levels}); raise budget or levels")
    gen = torch.Generator().manual_seed(seed)
    tested: dict[tuple[int, ...], float] = {}

    def rand_index(n: int) -> int:
        return int(torch.randint(n, (), generator=gen))

    def admissible(cand: tuple[int, ...], fresh: set) -> bool:
        return cand not in tested and cand not in fresh and space.macs_of_kept(cand) <= limit

    def draw(n: int, fresh: set, make) -> list:
        """Up to ``n`` new admissible candidates from ``make()``, within ``max_tries`` draws."""
        out, tries = [], 0
        while len(out) < n and tries < max_tries:
            tries += 1
            cand = make()
            if admissible(cand, fresh):
                out.append(cand)
                fresh.add(cand)
        return out

    def random_candidates(n: int, fresh: set) -> list:
        return draw(n, fresh, lambda: tuple(ch[rand_index(len(ch))] for ch in choices))

    def mutate(parents: list) -> tuple[int, ...]:
        p = parents[rand_index(len(parents))]
        cand = []
        for k, ch in zip(p, choices):
            i = ch.index(k)
            if len(ch) > 1 and float(torch.rand((), generator=gen)) < mutation_prob:
                i = (i + 1 + rand_index(len(ch) - 1)) % len(ch)  # a different width
            cand.append(ch[i])
        return tuple(cand)

    def cross(parents: list) -> tuple[int, ...]:
        i = rand_index(len(parents))
        j = (i + 1 + rand_index(len(parents) - 1)) % len(parents)
        mask = torch.rand(len(choices), generator=gen) < 0.5
        return tuple(a if m else b for a, b, m in zip(parents[i], parents[j], mask.tolist()))

    def mutations(parents: list, n: int, fresh: set) -> list:
        return draw(n, fresh, lambda: mutate(parents))

    def crossovers(parents: list, n: int, fresh: set) -> list:
        return draw(n, fresh, lambda: cross(parents)) if len(parents) >= 2 else []

    history: list[dict] = []
    top: list[tuple[float, tuple[int, ...]]] = []
    candidates = random_candidates(population, set())
    bar = tqdm(range(generations), disable=not progress, desc="evolution")
    net.eval()
    for g in bar:
        scores = []
        for cand in candidates:
            tested[cand] = net.accuracy(cand, batch, calibration)
            scores.append(tested[cand])
        # best first; ties: fewer MACs, then the earlier-found candidate (stable sort)
        top = sorted(top + list(zip(scores, candidates)), key=lambda sc: (-sc[0], space.macs_of_kept(sc[1])))[:top_k]
        if not top:
            raise ValueError(f"no width configuration within budget={budget:g} was found in {max_tries} random "
                             "draws; raise budget, levels or max_tries")
        best_fit, best = top[0]
        history.append({
            "generation": g, "reward": best_fit, "best_fitness": best_fit,
            "mean_fitness": sum(scores) / len(scores) if scores else float("nan"),
            "mac_fraction": space.macs_of_kept(best) / space.total_macs,
            "mean_mac_fraction": (sum(space.macs_of_kept(c) for c in candidates) / len(candidates) / space.total_macs
                                  if candidates else float("nan")),
            "kept": list(best), "ratios": space.ratios_from_kept(best), "evaluated": len(candidates),
        })
        bar.set_postfix(best=f"{best_fit:.3f}", mean=f"{history[-1]['mean_fitness']:.3f}")
        if g == generations - 1:
            break
        parents = [c for _, c in top]
        fresh: set = set()
        nxt = mutations(parents, population // 2, fresh)
        nxt += crossovers(parents, population // 2, fresh)
        nxt += random_candidates(population - len(nxt), fresh)
        candidates = nxt
    bar.close()
    best_fit, best = top[0]
    uniform_kept = space.kept(space.uniform(budget))
    return SearchResult("metapruning", space.names, budget, space.ratios_from_kept(best), best_fit,
                        space.macs_of_kept(best) / space.total_macs, history,
                        {"best_kept": list(best), "tested": len(tested), "top": [(f, list(c)) for f, c in top],
                         "uniform_kept": uniform_kept,
                         "uniform_fitness": net.accuracy(uniform_kept, batch, calibration)})


def metapruning_search(
    model: nn.Module,
    example_inputs: Any,
    train_loader: Any,
    budget: float = 0.5,
    *,
    steps: int = 300,
    generations: int = 10,
    population: int = 16,
    top_k: int = 4,
    mutation_prob: float = 0.1,
    levels: int = 10,
    meta_hidden: int = 32,
    lr: float = 3e-3,
    batch_size: int = 64,
    n_val: int = 256,
    n_calibration: int = 256,
    validation: tuple[torch.Tensor, torch.Tensor] | None = None,
    seed: int = 0,
    progress: bool = True,
    architecture: Architecture | None = None,
) -> SearchResult:
    """Train a PruningNet for ``model``'s architecture, then search its widths under ``budget``.

    ``architecture`` describes ``model`` (see :class:`Architecture`); if omitted, ``model``
    must supply it with a ``pruningnet_architecture()`` method, as the book's ``SmallCNN``
    does. The pretrained weights of ``model`` are not used: it defines the layers and MACs.

    The fitness of a candidate is its accuracy on a validation batch. With ``validation``
    (an ``(inputs, targets)`` batch, e.g. the images of
    ``pk.data.digits(validation=0.5)[1]`` as one batch) the PruningNet trains on all of
    ``train_loader``'s dataset and the fitness uses ``validation``. Without it, ``n_val``
    examples of ``train_loader``'s dataset are split off (seeded) as the validation batch
    and the PruningNet trains on the rest. The BatchNorm statistics of a candidate are
    estimated on ``n_calibration`` training examples (PruningNet training data). The result's
    ``extra`` holds the trained ``pruningnet``, its ``train_losses``, ``best_kept`` (the
    widths), and ``calibration`` (the inputs to pass to ``pruningnet.build(best_kept,
    calibration)`` for a ready model of those widths).

    Every argument is checked (``TypeError``/``ValueError``) before the PruningNet is trained.
    """
    arch = architecture_of(model, architecture)
    budget = check_budget(budget)
    for name, value, minimum in (("steps", steps, 1), ("generations", generations, 1), ("population", population, 2),
                                 ("top_k", top_k, 2), ("levels", levels, 1), ("meta_hidden", meta_hidden, 1),
                                 ("batch_size", batch_size, 1), ("n_calibration", n_calibration, 1),
                                 ("seed", seed, 0)):
        check_int(name, value, minimum=minimum)
    check_number("mutation_prob", mutation_prob, low=0.0, high=1.0)
    check_number("lr", lr, low=0.0, low_open=True)
    if validation is None:
        (x_tr, y_tr), val = split_batches(train_loader, n_val, seed)
    else:
        dataset = getattr(train_loader, "dataset", train_loader)
        if not hasattr(dataset, "tensors"):
            raise TypeError("train_loader must be a DataLoader over a TensorDataset (e.g. pk.zoo.loaders(name)[0])")
        if not (isinstance(validation, tuple) and len(validation) == 2
                and all(isinstance(t, torch.Tensor) for t in validation)):
            raise TypeError("validation must be a tuple (inputs, targets) of tensors, e.g. "
                            "validation_loader.dataset.tensors")
        (x_tr, y_tr), val = (dataset.tensors[0], dataset.tensors[1]), validation
    space = SearchSpace(model, example_inputs)
    if tuple(space.names) != arch.layers:
        raise ValueError(f"the search space of the model has the layers {list(space.names)}, but its architecture "
                         f"names {list(arch.layers)}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = PruningNet.from_model(model, meta_hidden, arch)
    losses = train_pruningnet(net, (x_tr, y_tr), steps, batch_size=batch_size, lr=lr, levels=levels, seed=seed,
                              progress=progress)
    calib = x_tr[torch.randperm(len(x_tr), generator=torch.Generator().manual_seed(seed + 1))[:n_calibration]]
    result = evolutionary_search(net, space, val, calib, budget, generations=generations, population=population,
                                 top_k=top_k, mutation_prob=mutation_prob, levels=levels, seed=seed,
                                 progress=progress)
    result.extra.update({"pruningnet": net, "train_losses": losses, "calibration": calib, "val_batch": val})
    return result
