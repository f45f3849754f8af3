"""AMC-style reinforcement learning of per-layer pruning ratios (toy scale).

He, Lin, Liu, Wang, Li & Han, "AMC: AutoML for Model Compression and Acceleration on Mobile
Devices", ECCV 2018 -- the reinforcement-learning branch of "learning to prune" in Cheng,
Zhang & Shi's survey (arXiv 2308.06767).

What is faithful to the paper
    * An agent walks the prunable layers in order (:class:`~prunekit.methods.learned.search_space.SearchSpace`:
      one decision per channel group). Its state at layer ``t`` is the paper's embedding
      (:data:`~prunekit.methods.learned.search_space.STATE_FEATURES`): layer index, ``c_in``, ``c_out``,
      stride, kernel size, the layer's MACs, the MACs reduced so far, the MACs of the later
      layers and the previous action, normalised to [0, 1] (static features min-max over the
      layers, the dynamic ones as fractions of the total MACs).
    * The action is a continuous pruning ratio in ``[0, max_ratio]``.
    * Resource-constrained mode: the action is clipped so that the budget stays reachable when
      every later layer is pruned as hard as allowed (the paper's action-space restriction),
      so every episode ends at or under the MAC budget -- asserted on every episode.
    * Channels are chosen by magnitude (L1 norm of the filter); there is no fine-tuning
      inside the loop; the reward is ``R_err = -error`` of the pruned network on a validation
      batch (the paper splits it off the training data; the book uses a validation split
      that no zoo model was trained on) -- here reported as the accuracy ``1 - error``.
    * Exploration noise decays over episodes (AMC: truncated normal, sigma 0.5, decay 0.99), the
      reward has a moving-average baseline, and the best strategy seen is returned.

What is simplified for toy scale (and why)
    * **Agent: REINFORCE, not DDPG.** The policy is a small MLP mapping the state to the
      mean of a Gaussian over the ratio (``mean = max_ratio * sigmoid(mlp(state))``); actions
      are sampled around it with AMC's decaying sigma; after each episode the policy
      follows ``(R - b) * sum_t grad log pi(a_t | s_t)`` (Williams 1992) with ``b`` AMC's
      moving-average reward baseline. Every step of an episode gets the episode's final
      reward, as in AMC. With four to six layers and a few hundred episodes a
      critic, a replay buffer and target networks add moving parts but no benefit; the
      Monte-Carlo policy gradient is the textbook algorithm a reader can check by hand.
    * Episodes: a few hundred (AMC: 100 warm-up + 300 on ImageNet); no warm-up phase with
      uniform random actions (REINFORCE is on-policy; the large initial sigma explores).
    * AMC prunes the *input* channels of each layer and reconstructs the next layer's weights
      by least squares; here a ratio removes a layer's *output* channels (the same channels,
      seen from the producer), selected by L1 norm, without reconstruction.

>>> import torch, prunekit as pk
>>> from prunekit.methods.learned.amc import amc_search
>>> from prunekit.methods.learned.search_space import as_batch
>>> _, validation_loader, _ = pk.data.digits(validation=0.5)
>>> batch = as_batch(validation_loader)
>>> res = amc_search(pk.zoo.load("cnn-digits"), torch.zeros(1, 1, 8, 8), batch, budget=0.5,
...                  episodes=20, progress=False)
>>> len(res.history), res.best_mac_fraction <= 0.5
(20, True)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from ..._validate import check_int, check_model, check_number
from .search_space import STATE_FEATURES, SearchResult, SearchSpace, check_budget

__all__ = ["AMCPolicy", "amc_search", "run_episode", "reinforce"]


class AMCPolicy(nn.Module):
    """The actor: state (9 features) -> mean ratio in ``(0, max_ratio)``."""

    def __init__(self, n_features: int = len(STATE_FEATURES), hidden: int = 64, max_ratio: float = 0.8) -> None:
        super().__init__()
        self.max_ratio = max_ratio
        self.net = nn.Sequential(nn.Linear(n_features, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                                 nn.Linear(hidden, 1))

    def forward(self, state: torch.Tensor) -> torch.Tensor:
        return self.max_ratio * torch.sigmoid(self.net(state)).squeeze(-1)


def run_episode(space: SearchSpace, mean_fn: Callable[[int, torch.Tensor], torch.Tensor], sigma: float,
                budget_macs: int, max_ratio: float, generator: torch.Generator | None):
    """One walk over the layers: sample, clip by the budget wall, return what REINFORCE needs.

    ``mean_fn(t, state)`` gives the policy's mean ratio (a 0-dim tensor with a graph) for
    layer ``t``. Returns ``(removed counts, summed log-probabilities)``; ``sigma = 0`` (or
    ``generator=None``) takes the mean action (log-probability 0).
    """
    prefix: list[int] = []
    logp = torch.zeros(())
    prev = 0.0
    for t in range(len(space)):
        mu = mean_fn(t, space.state(t, prefix, prev))
        if sigma > 0 and generator is not None:
            eps = torch.randn((), generator=generator)
            a = (mu.detach() + sigma * eps)
            logp = logp + torch.distributions.Normal(mu, sigma).log_prob(a)
        else:
            a = mu.detach()
        c = space.sizes[t]
        a_env = min(max(float(a), 0.0), max_ratio)
        n = space.clip_removed(t, min(round(a_env * c), c - 1), prefix, budget_macs, max_ratio)
        prefix.append(n)
        prev = n / c
    return prefix, logp


def reinforce(space: SearchSpace, policy: nn.Module, mean_fn: Callable[[int, torch.Tensor], torch.Tensor],
              batch: tuple[torch.Tensor, torch.Tensor], *, method: str, budget: float, episodes: int,
              max_ratio: float, lr: float, sigma: float, sigma_decay: float, sigma_min: float,
              baseline_momentum: float, seed: int, progress: bool) -> SearchResult:
    """The REINFORCE loop shared by AMC and the GNN policy (see the module docstring), public for
    policies and rewards of your own.

    ``space`` is a :class:`~prunekit.methods.learned.search_space.SearchSpace` (subclass it to
    change the reward, e.g. ``accuracy - 0.5 * mac_fraction``); ``policy`` the ``nn.Module``
    whose parameters Adam trains (``lr``); ``mean_fn(t, state)`` the policy's mean ratio for
    layer ``t`` as a 0-dim tensor with a graph (for :class:`AMCPolicy`:
    ``lambda t, state: policy(state)``); ``batch`` the ``(inputs, targets)`` reward batch;
    ``method`` the name recorded in the result. The other arguments are those of
    :func:`amc_search`. Every argument is checked (``TypeError``/``ValueError``) before the
    first episode. Returns a :class:`SearchResult` as :func:`amc_search` does.
    """
    if not isinstance(space, SearchSpace):
        raise TypeError(f"space must be a SearchSpace, got {type(space).__name__}")
    if not isinstance(policy, nn.Module) or not any(p.requires_grad for p in policy.parameters()):
        raise TypeError(f"policy must be an nn.Module with trainable parameters, got {type(policy).__name__}")
    if not callable(mean_fn):
        raise TypeError(f"mean_fn must be a callable mean_fn(t, state) -> 0-dim tensor, got {type(mean_fn).__name__}")
    if not isinstance(method, str) or not method:
        raise TypeError(f"method must be a non-empty string (the name recorded in the result), got {method!r}")
    budget, episodes, max_ratio, lr, sigma, sigma_decay, seed = check_search_args(
        policy, budget, episodes, max_ratio, lr, sigma, sigma_decay, seed)
    sigma_min = check_number("sigma_min", sigma_min, low=0.0)
    baseline_momentum = check_number("baseline_momentum", baseline_momentum, low=0.0, high=1.0, high_open=True)
    batch = check_batch(batch)
    if not isinstance(progress, bool):
        raise TypeError(f"progress must be a bool, got {type(progress).__name__}")
    limit = space.check_reachable(budget, max_ratio)
    opt = torch.optim.Adam(policy.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed)
    baseline = None
    history: list[dict] = []
    best = (-1.0, None, None)
    bar = tqdm(range(episodes), disable=not progress, desc=method)
    s = sigma
    for ep in bar:
        removed, logp = run_episode(space, mean_fn, s, limit, max_ratio, gen)
        ratios = [n / c for n, c in zip(removed, space.sizes)]
        macs = space.macs(ratios)
        if macs > limit:  # cannot happen: the budget wall guarantees it (tested); never report a violation silently
            raise RuntimeError(f"episode {ep}: {macs} MACs exceed the budget of {limit} MACs")
        reward = space.accuracy(ratios, batch)
        baseline = reward if baseline is None else baseline_momentum * baseline + (1 - baseline_momentum) * reward
        advantage = reward - baseline
        if advantage != 0.0:
            opt.zero_grad(set_to_none=True)
            (-advantage * logp).backward()
            opt.step()
        history.append({"episode": ep, "ratios": ratios, "kept": [c - n for c, n in zip(space.sizes, removed)],
                        "mac_fraction": macs / space.total_macs, "reward": reward, "baseline": baseline,
                        "sigma": s})
        if reward > best[0]:
            best = (reward, ratios, macs / space.total_macs)
        bar.set_postfix(reward=f"{reward:.3f}", best=f"{best[0]:.3f}", macs=f"{macs / space.total_macs:.3f}")
        s = max(sigma_min, s * sigma_decay)
    bar.close()
    with torch.no_grad():
        removed, _ = run_episode(space, mean_fn, 0.0, limit, max_ratio, None)
    policy_ratios = [n / c for n, c in zip(removed, space.sizes)]
    policy_reward = space.accuracy(policy_ratios, batch)
    if policy_reward > best[0]:
        best = (policy_reward, policy_ratios, space.mac_fraction(policy_ratios))
    return SearchResult(method, space.names, budget, best[1], best[0], best[2], history,
                        {"policy_ratios": policy_ratios, "policy_reward": policy_reward,
                         "policy_mac_fraction": space.mac_fraction(policy_ratios), "policy": policy})


def check_search_args(model: Any, budget: Any, episodes: Any, max_ratio: Any, lr: Any, sigma: Any,
                      sigma_decay: Any, seed: Any, episodes_arg: str = "episodes") -> tuple:
    check_model(model)
    budget = check_budget(budget)
    episodes = check_int(episodes_arg, episodes, minimum=1)
    max_ratio = check_number("max_ratio", max_ratio, low=0.0, high=1.0, low_open=True, high_open=True)
    lr = check_number("lr", lr, low=0.0, low_open=True)
    sigma = check_number("sigma", sigma, low=0.0)
    sigma_decay = check_number("sigma_decay", sigma_decay, low=0.0, high=1.0, low_open=True)
    seed = check_int("seed", seed, minimum=0)
    return budget, episodes, max_ratio, lr, sigma, sigma_decay, seed


def check_batch(batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
    if not (isinstance(batch, (tuple, list)) and len(batch) == 2
            and all(isinstance(t, torch.Tensor) for t in batch)):
        raise TypeError("batch must be a tuple (inputs, targets) of tensors, e.g. as_batch(validation_loader)")
    if batch[0].shape[0] != batch[1].shape[0] or batch[0].shape[0] == 0:
        raise ValueError(f"batch must hold as many targets as inputs (and at least one), got "
                         f"{batch[0].shape[0]} inputs and {batch[1].shape[0]} targets")
    return batch[0], batch[1]


def amc_search(
    model: nn.Module,
    example_inputs: Any,
    batch: tuple[torch.Tensor, torch.Tensor],
    budget: float = 0.5,
    episodes: int = 300,
    *,
    max_ratio: float = 0.8,
    layers: Sequence[str] | None = None,
    hidden: int = 64,
    lr: float = 1e-3,
    sigma: float = 0.5,
    sigma_decay: float = 0.99,
    sigma_min: float = 0.02,
    baseline_momentum: float = 0.95,
    seed: int = 0,
    progress: bool = True,
) -> SearchResult:
    """Search per-layer pruning ratios for ``model`` under a MAC ``budget`` with an AMC-style agent.

    Args:
        model: the trained model (not modified).
        example_inputs: one example input (batch 1), to trace the model and count MACs.
        batch: ``(inputs, targets)`` of a validation split (data the model was not trained
            on, not the test split): the reward is the pruned model's accuracy on it
            (:func:`~prunekit.methods.learned.search_space.as_batch`).
        budget: MACs kept, as a fraction of the dense model's, in (0, 1].
        episodes: episodes of the agent (one walk over all layers each).
        max_ratio: the largest pruning ratio of a layer (AMC's ``rbound``).
        layers: names of the layers to search (default: all prunable channel groups).
        lr, hidden: the actor's Adam learning rate and hidden width.
        sigma, sigma_decay, sigma_min: exploration noise, multiplied by ``sigma_decay`` after
            every episode (AMC: 0.5 and 0.99).
        baseline_momentum: the moving-average reward baseline's momentum.
        seed: seeds the actor's initial weights and the exploration noise (same seed, same run).
        progress: a tqdm bar over the episodes.

    Returns a :class:`~prunekit.methods.learned.search_space.SearchResult`: ``best_ratios`` (the best
    episode, or the final policy's noise-free walk if that is better), and a history entry per
    episode (``ratios``, ``kept``, ``mac_fraction``, ``reward``, ``baseline``, ``sigma``);
    ``extra`` holds the final policy and its noise-free ``policy_ratios``/``policy_reward``.
    """
    budget, episodes, max_ratio, lr, sigma, sigma_decay, seed = check_search_args(
        model, budget, episodes, max_ratio, lr, sigma, sigma_decay, seed)
    batch = check_batch(batch)
    hidden = check_int("hidden", hidden, minimum=1)
    space = SearchSpace(model, example_inputs, layers=layers)
    space.check_reachable(budget, max_ratio)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        policy = AMCPolicy(len(STATE_FEATURES), hidden, max_ratio)
    return reinforce(space, policy, lambda t, state: policy(state), batch, method="amc", budget=budget,
                     episodes=episodes, max_ratio=max_ratio, lr=lr, sigma=sigma, sigma_decay=sigma_decay,
                     sigma_min=sigma_min, baseline_momentum=baseline_momentum, seed=seed, progress=progress)
