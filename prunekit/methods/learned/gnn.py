"""A graph-neural-network pruning policy over the layer graph, trained with AMC's reward (toy scale).

Yu, Xu, Mao, Liu, Chen & Wang, "Auto Graph Encoder-Decoder for Neural Network Pruning"
(AGMC), ICCV 2021; Zhang, Zhu, Xie, Shi & Li, "Graph Pruning for Model Compression",
Applied Intelligence 2022 -- the graph-neural-network branch of "learning to prune" in Cheng,
Zhang & Shi's survey (arXiv 2308.06767).

The idea: the network to prune is itself a graph. Embed every layer with a GNN that sees its
neighbours (what feeds it, what it feeds), map the embeddings to per-layer pruning ratios, and
train with the reward of the pruned network. Because the GNN only sees normalised layer
features and the graph's structure, the same policy applies to a network it was not trained on.

Here
    * **Graph** -- nodes = the prunable channel groups of
      :class:`~prunekit.methods.learned.search_space.SearchSpace`; node features = the static part of
      AMC's state (index, ``c_in``, ``c_out``, stride, kernel, MACs; min-max normalised per
      model); directed edges = data flow ``i -> j`` when a producer of ``j`` reads the channels
      of ``i`` (from :func:`prunekit.core.graph.channels.plan_channels`, i.e. the torch.fx trace). A
      residual stream is one node, so a ResNet's graph has cycles (stream -> block conv ->
      stream); message passing does not mind.
    * **GNN** (:class:`LayerGNN`, plain PyTorch, no graph library) -- ``rounds`` rounds of
      ``h <- relu(W_self h + W_in mean_{predecessors} h + W_out mean_{successors} h)`` after a
      linear input layer: permutation-equivariant by construction (tested).
    * **Policy** (:class:`GNNPolicy`) -- the decoder is AMC's sequential walk: at layer ``t`` an
      MLP maps ``[embedding_t, reduced, rest, previous action]`` to the mean of a Gaussian
      over the ratio, so the budget wall of AMC applies unchanged and every episode meets
      the MAC budget. AGMC feeds the graph embedding to a DDPG agent; we train the whole
      policy (GNN included) with REINFORCE and a moving-average baseline, exactly as
      :mod:`prunekit.methods.learned.amc` (see there for why REINFORCE instead of DDPG).
    * **Transfer** (:func:`gnn_ratios`) -- the trained policy's noise-free walk on another
      model's graph, no retraining.

Simplified for toy scale: a 2-round GNN with 32 hidden units over graphs of 2-6 nodes (AGMC
encodes the fine-grained computational graph with a hierarchical encoder); a few hundred
episodes; magnitude channel selection without fine-tuning in the loop; accuracy on a
validation batch as the reward (AMC's ``R_err``).

>>> import torch, prunekit as pk
>>> from prunekit.methods.learned.gnn import gnn_search, gnn_ratios
>>> from prunekit.methods.learned.search_space import as_batch
>>> _, validation_loader, _ = pk.data.digits(validation=0.5)
>>> res = gnn_search(pk.zoo.load("cnn-digits"), torch.zeros(1, 1, 8, 8), as_batch(validation_loader),
...                  budget=0.5, episodes=10, progress=False)
>>> ratios = gnn_ratios(res.extra["policy"], pk.zoo.load("resnet-shapes"), torch.zeros(1, 3, 32, 32), budget=0.5)
>>> len(ratios)
6
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from .amc import check_batch, check_search_args, reinforce, run_episode
from ..._validate import check_int
from .search_space import SearchResult, SearchSpace

__all__ = ["LayerGNN", "GNNPolicy", "adjacency", "gnn_search", "gnn_ratios"]

N_STATIC = 6   # index, c_in, c_out, stride, kernel, MACs
N_DYNAMIC = 3  # reduced, rest, previous action


def adjacency(n: int, edges: Sequence[tuple[int, int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Row-normalised ``(A_in, A_out)``, ``[n, n]``: ``A_in[j] @ h`` is the mean of ``j``'s predecessors.

    A node without predecessors (successors) gets a zero row: its message is 0.
    """
    a_in = torch.zeros(n, n)
    for i, j in edges:
        if not (0 <= i < n and 0 <= j < n):
            raise ValueError(f"edges must index nodes 0..{n - 1}, got ({i}, {j})")
        a_in[j, i] = 1.0
    a_out = a_in.t().clone()

    def norm(a: torch.Tensor) -> torch.Tensor:
        deg = a.sum(1, keepdim=True)
        return a / deg.clamp(min=1.0)

    return norm(a_in), norm(a_out)


class LayerGNN(nn.Module):
    """Message passing with mean aggregation over predecessors and successors."""

    def __init__(self, n_features: int = N_STATIC, hidden: int = 32, rounds: int = 2) -> None:
        super().__init__()
        self.inp = nn.Linear(n_features, hidden)
        self.rounds = nn.ModuleList(
            nn.ModuleDict({"self": nn.Linear(hidden, hidden), "pred": nn.Linear(hidden, hidden, bias=False),
                           "succ": nn.Linear(hidden, hidden, bias=False)}) for _ in range(rounds))

    def forward(self, x: torch.Tensor, edges: Sequence[tuple[int, int]]) -> torch.Tensor:
        """Node embeddings ``[n, hidden]`` of node features ``x`` (``[n, n_features]``)."""
        a_in, a_out = adjacency(x.shape[0], edges)
        h = torch.relu(self.inp(x))
        for r in self.rounds:
            h = torch.relu(r["self"](h) + r["pred"](a_in @ h) + r["succ"](a_out @ h))
        return h


class GNNPolicy(nn.Module):
    """GNN encoder + AMC-style sequential decoder: ``[h_t, reduced, rest, a_{t-1}]`` -> mean ratio."""

    def __init__(self, hidden: int = 32, rounds: int = 2, max_ratio: float = 0.8) -> None:
        super().__init__()
        self.max_ratio = max_ratio
        self.gnn = LayerGNN(N_STATIC, hidden, rounds)
        self.head = nn.Sequential(nn.Linear(hidden + N_DYNAMIC, hidden), nn.ReLU(), nn.Linear(hidden, 1))

    def embed(self, space: SearchSpace) -> torch.Tensor:
        return self.gnn(space.static_features(), space.edges())

    def mean(self, emb: torch.Tensor, t: int, state: torch.Tensor) -> torch.Tensor:
        z = self.head(torch.cat([emb[t], state[N_STATIC:]]))
        return self.max_ratio * torch.sigmoid(z).squeeze(-1)


class _EpisodeMean:
    """``mean_fn`` for :func:`prunekit.methods.learned.amc.run_episode`: embeds the graph once per episode."""

    def __init__(self, policy: GNNPolicy, space: SearchSpace) -> None:
        self.policy, self.space, self.emb = policy, space, None

    def __call__(self, t: int, state: torch.Tensor) -> torch.Tensor:
        if t == 0 or self.emb is None:
            self.emb = self.policy.embed(self.space)
        return self.policy.mean(self.emb, t, state)


def gnn_search(
    model: nn.Module,
    example_inputs: Any,
    batch: tuple[torch.Tensor, torch.Tensor],
    budget: float = 0.5,
    episodes: int = 300,
    *,
    policy: GNNPolicy | None = None,
    max_ratio: float = 0.8,
    layers: Sequence[str] | None = None,
    hidden: int = 32,
    rounds: int = 2,
    lr: float = 1e-3,
    sigma: float = 0.5,
    sigma_decay: float = 0.99,
    sigma_min: float = 0.02,
    baseline_momentum: float = 0.95,
    seed: int = 0,
    progress: bool = True,
) -> SearchResult:
    """Train a :class:`GNNPolicy` on ``model`` with the AMC reward (pass ``policy=`` to continue one).

    Arguments as :func:`prunekit.methods.learned.amc.amc_search`; ``hidden``/``rounds`` size the GNN.
    ``result.extra["policy"]`` is the trained policy, for :func:`gnn_ratios` on other models.
    """
    budget, episodes, max_ratio, lr, sigma, sigma_decay, seed = check_search_args(
        model, budget, episodes, max_ratio, lr, sigma, sigma_decay, seed)
    batch = check_batch(batch)
    hidden = check_int("hidden", hidden, minimum=1)
    rounds = check_int("rounds", rounds, minimum=0)
    if policy is not None and not isinstance(policy, GNNPolicy):
        raise TypeError(f"policy must be a GNNPolicy or None, got {type(policy).__name__}")
    space = SearchSpace(model, example_inputs, layers=layers)
    space.check_reachable(budget, max_ratio)
    if policy is None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            policy = GNNPolicy(hidden, rounds, max_ratio)
    policy.max_ratio = max_ratio
    return reinforce(space, policy, _EpisodeMean(policy, space), batch, method="gnn", budget=budget,
                     episodes=episodes, max_ratio=max_ratio, lr=lr, sigma=sigma, sigma_decay=sigma_decay,
                     sigma_min=sigma_min, baseline_momentum=baseline_momentum, seed=seed, progress=progress)


def gnn_ratios(policy: GNNPolicy, model: nn.Module, example_inputs: Any, budget: float = 0.5, *,
               max_ratio: float | None = None, layers: Sequence[str] | None = None) -> list[float]:
    """The policy's noise-free ratios for ``model`` (any model it can trace), under ``budget``.

    No training: this is the transfer step. ``max_ratio`` defaults to the policy's.
    """
    if not isinstance(policy, GNNPolicy):
        raise TypeError(f"policy must be a GNNPolicy, got {type(policy).__name__}")
    max_ratio = policy.max_ratio if max_ratio is None else max_ratio
    budget, _, max_ratio, *_ = check_search_args(model, budget, 1, max_ratio, 1.0, 0.0, 1.0, 0)
    space = SearchSpace(model, example_inputs, layers=layers)
    limit = space.check_reachable(budget, max_ratio)
    with torch.no_grad():
        removed, _ = run_episode(space, _EpisodeMean(policy, space), 0.0, limit, max_ratio, None)
    return [n / c for n, c in zip(removed, space.sizes)]
