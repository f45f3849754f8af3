"""Learning to prune by learning the mask: hard-concrete L0 gates and straight-through masks.

The survey's mask-learning branch of "learning to prune" (Cheng et al. 2024), on channels:

* :class:`HardConcreteGates` + :func:`train_l0_gates` -- L0 regularisation with hard-concrete
  gates (Louizos, Welling & Kingma, ICLR 2018), one gate per output channel, trained towards a
  target sparsity with a Lagrangian (Wang, Wohlwend & Lei, EMNLP 2020, as in CoFi and
  Sheared-LLaMA) plus a fixed quadratic term (augmented Lagrangian) instead of the paper's
  fixed ``lambda * E[L0]``.
* :class:`STEChannelMasks` + :func:`train_ste_masks` -- learnable per-channel scores, a hard
  top-k mask in the forward pass and a straight-through gradient to the scores (Bengio,
  Leonard & Courville 2013), the edge-popup recipe (Ramanujan et al., CVPR 2020) applied to
  channels instead of weights.

Gates act through forward hooks that multiply a layer's channels (dim 1 for a convolution
``[N, C, ...]``, the last dim for a Linear) *after* the BatchNorm that follows the layer (a
BatchNorm in train mode would undo a scale applied before it) and after the ReLU that follows
that, when there is one (same forward, since gates are >= 0, but a closed channel still
passes a gradient to its gate). ``apply()`` removes the hooks and turns the learned gates into
ordinary prunekit channel masks (:func:`prunekit.apply_masks`: whole rows of the weight, plus
the bias entries and the following BatchNorm's scale and shift, so a removed channel outputs
exactly zero), folding fractional gate values into the BatchNorm / layer parameters, so the
masked model computes what the gated model computed in eval mode; ``summary``,
``remove_masks`` and fine-tuning then work as usual. The training loops are our own (not
:func:`prunekit.train.train`, which optimises only ``model.parameters()``).

Which layers: :func:`prunekit.core.targets.find_targets` (Linear / Conv weights, ``include`` /
``exclude``). The gate classes leave out the *last* target by default (the output layer: its
"channels" are the classes). Sparsity *regularisation* (L1, group lasso, Network Slimming) is
in :mod:`prunekit.methods.learned.regularization`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from numbers import Real
from typing import Any

import torch
from torch import nn

from ..._validate import check_int, check_model, check_nonneg, check_positive
from ...allocation import allocate, check_scope, check_sparsity
from ...criteria._common import following_batchnorm
from ...core.graph.queries import following_relu
from ...core.masks import apply_masks, get_masks
from ...core.targets import Target, find_targets
from ...train import StepInfo, set_seed, train
from .regularization import _row_norms, channel_masks
from .search_space import SearchSpace

__all__ = ["HardConcreteGates", "train_l0_gates", "STEChannelMasks", "train_ste_masks", "HC_TEMPERATURE",
           "HC_LOW", "HC_HIGH"]

# Louizos et al. 2018, hard-concrete constants: the temperature T (the paper's beta) and the
# stretch interval (l, r) (the paper's (gamma, zeta)); the book's notation page uses T and (l, r).
HC_TEMPERATURE = 2.0 / 3.0
HC_LOW = -0.1
HC_HIGH = 1.1

Batches = Iterable[tuple[torch.Tensor, torch.Tensor]]

# --------------------------------------------------------------------------- gates (shared)

def _following_relu(model: nn.Module, sites: dict[str, nn.Module]) -> dict[str, nn.Module]:
    """For each site module, the ``nn.ReLU`` module that is its only consumer (and is called only
    once in the model); else the site itself (:func:`prunekit.core.graph.queries.following_relu`)."""
    return following_relu(model, sites)


def _gate_targets(model: nn.Module, include, exclude) -> list[Target]:
    targets = find_targets(model, include=include, exclude=exclude)
    if include is None and exclude is None:
        if len(targets) < 2:
            raise ValueError("the model has a single prunable layer (its output layer); pass include= to gate it")
        targets = targets[:-1]  # never gate the output layer (its channels are the classes)
    return targets


class _ChannelGateBase(nn.Module):
    """Per-output-channel gates attached to a model with forward hooks.

    The gate parameters live in this module (not in the model), one ``[out]`` vector per gated
    layer, in ``self.params`` keyed by ``layer_name.replace('.', '__')``. The hooks look at the
    *gated layer's* ``training`` flag: ``model.train()`` samples / uses the training-time gate,
    ``model.eval()`` the deterministic one.
    """

    def __init__(self, model: nn.Module, include=None, exclude=None) -> None:
        super().__init__()
        check_model(model)
        self.targets = _gate_targets(model, include, exclude)
        self.names = [t.name for t in self.targets]
        for t in self.targets:
            if not isinstance(t.module, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)) or t.attr != "weight":
                raise ValueError(f"gates act on the output of Linear / Conv layers; {t.name!r} is not such a weight")
        bns = following_batchnorm(model, self.targets)
        # where a gate multiplies: after the BatchNorm that follows the layer (in train mode a
        # BatchNorm would undo a per-channel scale applied before it), else the layer's output
        self.sites = {t.name: (bns[t.name] if bns[t.name] is not None else t.module) for t in self.targets}
        # the hook itself goes after the ReLU that consumes the site, when there is one: the
        # forward is the same (relu(z a) = z relu(a) for z >= 0), but a removed channel then
        # still passes a gradient to its gate (relu'(0) = 0 would block it before the ReLU)
        self.hook_sites = _following_relu(model, self.sites)
        self.params = nn.ParameterDict()
        self._handles: list[Any] = []
        self._model_ref = [model]  # a list so that the model is not registered as a submodule

    @staticmethod
    def _key(name: str) -> str:
        return name.replace(".", "__")

    def _init_params(self, values: dict[str, torch.Tensor]) -> None:
        for n in self.names:
            self.params[self._key(n)] = nn.Parameter(values[n].detach().clone().float())

    def param(self, name: str) -> nn.Parameter:
        return self.params[self._key(name)]

    def gate(self, name: str, training: bool, batch: int | None = None) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def attach(self) -> "_ChannelGateBase":
        """Register the forward hooks on the gated layers (idempotent); returns ``self``."""
        if self._handles:
            return self
        for t in self.targets:
            self._handles.append(self.hook_sites[t.name].register_forward_hook(self._make_hook(t.name)))
        return self

    def detach_hooks(self) -> None:
        """Remove the forward hooks: the model computes without gates again."""
        for h in self._handles:
            h.remove()
        self._handles = []

    def _make_hook(self, name: str):
        def hook(module: nn.Module, inputs: Any, output: torch.Tensor) -> torch.Tensor:
            # the gate is [C] or, for per-example noise, [N, C] (N = output.shape[0])
            g = self.gate(name, module.training, batch=output.shape[0] if output.dim() > 1 else None)
            g = g.to(output.dtype)
            shape = [1] * output.dim()
            channel_dim = output.dim() - 1 if isinstance(self.sites[name], nn.Linear) else 1
            shape[channel_dim] = -1
            if g.dim() == 2:
                shape[0] = g.shape[0]
            return output * g.view(shape)
        return hook

    def keep(self) -> dict[str, torch.Tensor]:  # pragma: no cover - abstract
        raise NotImplementedError

    def _fold_values(self, keep: dict[str, torch.Tensor]) -> dict[str, torch.Tensor] | None:
        return None

    def apply(self, keep: dict[str, torch.Tensor] | None = None, followers: bool = True) -> dict[str, torch.Tensor]:
        """Remove the hooks and apply the channel masks ``keep`` (default :meth:`keep`) to the
        model the gates were built for (see :func:`channel_masks` for ``followers``).

        Gate values of the kept channels that are not exactly 1 (hard-concrete ``z_hat`` in
        (0, 1)) are first folded into the gate site's parameters (the following BatchNorm's scale
        and shift, else the layer's weight rows and bias), so the masked model computes what the
        gated model computed in eval mode. Returns the masks now on those parameters (masks
        they had before stay applied: :func:`prunekit.apply_masks` never un-prunes).
        """
        model = self._model_ref[0]
        keep = self.keep() if keep is None else keep
        fold = self._fold_values(keep)
        masks = channel_masks(model, keep, followers=followers)
        self.detach_hooks()
        if fold is not None:
            with torch.no_grad():
                for t in self.targets:
                    site = self.sites[t.name]
                    for attr in ("weight", "bias"):
                        p = getattr(site, attr + "_orig", None)
                        p = getattr(site, attr, None) if p is None else p
                        if isinstance(p, nn.Parameter):
                            g = fold[t.name].to(p.dtype)
                            p.mul_(g.view([-1] + [1] * (p.dim() - 1)))
        apply_masks(model, masks)
        now = get_masks(model)
        return {n: now[n] for n in masks}

    def sparsity(self, keep: dict[str, torch.Tensor] | None = None) -> float:
        """Fraction of gated channels that ``keep`` (default :meth:`keep`) removes."""
        keep = self.keep() if keep is None else keep
        total = sum(k.numel() for k in keep.values())
        return 1.0 - sum(int(k.sum()) for k in keep.values()) / total


# --------------------------------------------------------------------------- hard-concrete L0 gates

class HardConcreteGates(_ChannelGateBase):
    """Hard-concrete L0 gates, one per output channel (Louizos, Welling & Kingma 2018).

    Training (the gated layer in train mode): ``u ~ U(0, 1)``,
    ``v = sigmoid((log u - log(1 - u) + log_alpha) / T)``, ``z = clamp(l + (r - l) v, 0, 1)``.
    Eval: ``z_hat = clamp(l + (r - l) sigmoid(log_alpha), 0, 1)``. Expected L0 of a gate:
    ``P(z > 0) = sigmoid(log_alpha - T log(-l / r))``. Constants: the temperature
    ``T = temperature = 2/3`` and the stretch interval ``(l, r) = (low, high) = (-0.1, 1.1)``
    (Louizos et al. call them beta and (gamma, zeta)). ``init_density`` sets ``log_alpha = log(d / (1 - d))`` (Louizos et al.
    initialise from a drop rate, ``log(1 - p) - log(p)``, plus N(0, 0.01) noise; the noise is
    used here too, seeded by the caller's ``torch.manual_seed``).
    """

    def __init__(self, model: nn.Module, include=None, exclude=None, init_density: float = 0.9,
                 temperature: float = HC_TEMPERATURE, low: float = HC_LOW, high: float = HC_HIGH) -> None:
        super().__init__(model, include, exclude)
        if not (isinstance(init_density, Real) and 0.0 < float(init_density) < 1.0):
            raise ValueError(f"init_density must be in (0, 1), got {init_density!r}")
        if not (low < 0.0 and high > 1.0 and temperature > 0.0):
            raise ValueError(f"need low < 0 < 1 < high and temperature > 0, got temperature={temperature}, "
                             f"low={low}, high={high}")
        self.temperature, self.low, self.high = float(temperature), float(low), float(high)
        la = math.log(init_density / (1.0 - init_density))
        self._init_params({t.name: la + 0.01 * torch.randn(t.shape[0]) for t in self.targets})

    def log_alpha(self, name: str) -> torch.Tensor:
        return self.param(name)

    def gate(self, name: str, training: bool, batch: int | None = None) -> torch.Tensor:
        """``[C]`` gates; in training with ``batch``, ``[batch, C]`` with independent noise per
        example (as in the authors' code, which samples one gate per example and channel)."""
        la = self.param(name)
        if training:
            shape = (batch, la.numel()) if batch is not None else la.shape
            u = torch.rand(shape, dtype=la.dtype, device=la.device).clamp(1e-6, 1.0 - 1e-6)
            v = torch.sigmoid((torch.log(u) - torch.log1p(-u) + la) / self.temperature)
        else:
            v = torch.sigmoid(la)
        return (self.low + (self.high - self.low) * v).clamp(0.0, 1.0)

    def prob_open(self) -> dict[str, torch.Tensor]:
        """``P(z > 0)`` per channel (differentiable): the expected L0 contribution."""
        shift = self.temperature * math.log(-self.low / self.high)
        return {n: torch.sigmoid(self.param(n) - shift) for n in self.names}

    def expected_l0(self) -> torch.Tensor:
        """``E[L0] = sum_channels P(z > 0)`` over all gated channels (differentiable)."""
        return sum(p.sum() for p in self.prob_open().values())

    def expected_density(self) -> torch.Tensor:
        """``E[L0] / number of gated channels`` (differentiable)."""
        return self.expected_l0() / self.num_channels

    @property
    def num_channels(self) -> int:
        return sum(t.shape[0] for t in self.targets)

    @torch.no_grad()
    def deterministic(self) -> dict[str, torch.Tensor]:
        """The test-time gates ``z_hat`` per layer."""
        return {n: self.gate(n, training=False).detach().clone() for n in self.names}

    def keep(self) -> dict[str, torch.Tensor]:
        """Channels whose deterministic gate is open (``z_hat > 0``); at least one per layer."""
        out = {}
        for n, z in self.deterministic().items():
            k = z > 0
            if not k.any():
                k[self.param(n).detach().argmax()] = True
            out[n] = k
        return out

    def gate_sparsity(self) -> float:
        """Fraction of deterministic gates that are exactly 0 (no at-least-one rule, no rounding)."""
        z = torch.cat([v.reshape(-1) for v in self.deterministic().values()])
        return float((z == 0).float().mean())

    def keep_exact(self, sparsity: float, scope: str = "global") -> dict[str, torch.Tensor]:
        """Rank channels by ``log_alpha`` and keep exactly ``round((1 - sparsity) n)`` of them
        (prunekit's allocation rule: at least one channel per layer). Pass the result to
        :meth:`apply` (``gates.apply(keep=gates.keep_exact(s))``) for an exact channel count;
        :meth:`keep` (the default) thresholds ``z_hat > 0`` instead."""
        sparsity = check_sparsity(sparsity)
        scope = check_scope(scope)
        return allocate({n: self.param(n).detach() for n in self.names}, sparsity, scope, min_keep=1)

    def _fold_values(self, keep: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        # a channel kept although its gate is closed (keep_exact below the gate threshold) is
        # folded with 1, not 0: it comes back at full strength (fine-tune afterwards)
        z = self.deterministic()
        return {n: torch.where((z[n] == 0) & keep[n].bool(), torch.ones_like(z[n]), z[n]) for n in z}


def train_l0_gates(
    model: nn.Module,
    loader: Batches,
    target_sparsity: float,
    steps: int = 800,
    lr: float = 0.05,
    seed: int = 0,
    *,
    weight_lr: float | None = 1e-3,
    multiplier_lr: float = 0.5,
    penalty: float = 1000.0,
    warmup: float = 0.5,
    init_density: float = 0.9,
    constraint: str = "channels",
    example_inputs: Any = None,
    include=None,
    exclude=None,
    apply: bool = False,
    progress: bool = False,
) -> tuple[HardConcreteGates, dict[str, Any]]:
    """Learn hard-concrete channel gates that remove ``target_sparsity`` of the channels (or MACs).

    Objective (Wang, Wohlwend & Lei 2020, "Structured Pruning of Large Language Models"; also CoFi
    and Sheared-LLaMA): ``CE + mu1 (d - t) + (mu2 + penalty) (d - t)^2`` with ``d`` the
    expected density and ``t = 1 - target_sparsity``; the gates and weights minimise it (Adam),
    the Lagrange multipliers ``mu1, mu2`` maximise it (gradient ascent with step
    ``multiplier_lr``, Wang et al.'s scheme). The fixed quadratic coefficient ``penalty`` (an
    augmented-Lagrangian term, our addition) damps the oscillation of the pure min-max game,
    which otherwise misses the target by 5-20 % within a few hundred steps on the book's small
    models. As in Wang et al., the target density ramps linearly from the initial expected
    density to ``t`` over the first ``warmup`` fraction of the steps, then holds (a target
    imposed at once makes the multiplier overshoot). This replaces the paper's fixed penalty
    ``lambda * E[L0]``, which reaches *some* sparsity, not a chosen one.

    ``constraint`` says what the density counts:

    * ``"channels"`` (default): ``d = E[L0] / n``, the expected fraction of open gates;
    * ``"macs"``: ``d`` = the expected MACs of the gated model / its dense MACs, from the
      closed form of :class:`~prunekit.methods.learned.search_space.SearchSpace` evaluated at the
      expected number of open gates per layer (:meth:`SearchSpace.expected_macs`, exact for
      independent gates). Needs ``example_inputs`` and one gated layer per searchable layer
      of the space (the default gates of a plain CNN or MLP). ``history["mac_fraction"]``
      then records the MAC fraction of the final deterministic mask (``z_hat > 0``), which is
      close to the target but, being a threshold of random gates' expectation, not bound
      by it.

    Weights are trained jointly (Adam, ``weight_lr``) as in Louizos et al.; ``weight_lr=None``
    freezes them (only gates learn). ``lr`` is the gates' (``log_alpha``) learning rate.

    Returns ``(gates, history)``; the gates stay attached (the model in eval mode uses the
    deterministic gates ``z_hat``). ``history``: per-step ``"loss"``, ``"density"`` (expected),
    ``"mu1"``, ``"mu2"``, and the final ``"gate_sparsity"`` (fraction of ``z_hat == 0``,
    before any rounding). ``apply=True`` then calls ``gates.apply()`` (threshold ``z_hat > 0``) and
    adds ``"masks"``. Arguments are checked before the model is touched.
    """
    check_model(model)
    target_sparsity = check_sparsity(target_sparsity, "target_sparsity")
    steps = check_int("steps", steps, 1)
    lr = check_positive("lr", lr)
    if weight_lr is not None:
        weight_lr = check_positive("weight_lr", weight_lr)
    multiplier_lr = check_nonneg("multiplier_lr", multiplier_lr)
    penalty = check_nonneg("penalty", penalty)
    if isinstance(warmup, bool) or not isinstance(warmup, Real) or not 0.0 <= float(warmup) < 1.0:
        raise ValueError(f"warmup must be a fraction of the steps in [0, 1), got {warmup!r}")
    if constraint not in ("channels", "macs"):
        raise ValueError(f"constraint must be 'channels' or 'macs', got {constraint!r}")
    seed = check_int("seed", seed, 0)
    gated = _gate_targets(model, include, exclude)
    space, layer_of = None, {}
    if constraint == "macs":
        if example_inputs is None:
            raise ValueError("constraint='macs' needs example_inputs (one input batch, to count the MACs)")
        space = SearchSpace(model, example_inputs)
        single = {info.producers[0]: i for i, info in enumerate(space.layers) if len(info.producers) == 1}
        for t in gated:
            module = t.name.rsplit(".", 1)[0]
            if module not in single:
                raise ValueError(f"constraint='macs' needs every gated layer to be a searchable layer of its own; "
                                 f"{module!r} is not (searchable layers: {list(space.names)})")
            layer_of[t.name] = single[module]

    set_seed(seed, loader)   # the gates' initial noise, the sampled gates and the batch order
    gates = HardConcreteGates(model, include, exclude, init_density=init_density).attach()

    def density() -> torch.Tensor:
        if space is None:
            return gates.expected_density()
        kept: list[Any] = [float(c) for c in space.sizes]
        for name, p in gates.prob_open().items():
            kept[layer_of[name]] = p.sum()
        return (space.expected_macs(kept) / space.total_macs).float()

    groups = [{"params": list(gates.parameters()), "lr": lr}]
    if weight_lr is not None:
        groups.append({"params": [p for p in model.parameters() if p.requires_grad], "lr": weight_lr})
    final = 1.0 - target_sparsity
    start = float(density().detach())
    ramp = max(1, round(float(warmup) * steps))
    hist: dict[str, Any] = {"loss": [], "density": [], "mu1": [], "mu2": []}
    game = {"step": 0, "mu1": 0.0, "mu2": 0.0, "gap": 0.0, "target": 0.0}

    def lagrangian(_: nn.Module) -> torch.Tensor:
        """``mu1 (d - t) + (mu2 + penalty) (d - t)^2`` with this step's target ``t`` (the ramp)."""
        step = game["step"]
        target = final if step >= ramp else start + (final - start) * (step + 1) / ramp
        gap = density() - target
        game["gap"], game["target"] = float(gap.detach()), target
        return game["mu1"] * gap + (game["mu2"] + penalty) * gap * gap

    def ascend(info: StepInfo) -> None:
        """After the descent step of the gates and weights: gradient ascent on the multipliers."""
        g = game["gap"]
        game["mu1"] += multiplier_lr * g
        game["mu2"] += multiplier_lr * g * g
        game["step"] += 1
        hist["loss"].append(info.loss)
        hist["density"].append(g + game["target"])
        hist["mu1"].append(game["mu1"])
        hist["mu2"].append(game["mu2"])

    try:
        train(model, loader, steps=steps, seed=None, progress=progress, param_groups=groups,
              regularizer=lagrangian, callback=ascend)
    finally:
        model.eval()
        model.zero_grad(set_to_none=True)
    hist["gate_sparsity"] = gates.gate_sparsity()
    if space is not None:
        kept_now = list(space.sizes)
        for name, k in gates.keep().items():
            kept_now[layer_of[name]] = int(k.sum())
        hist["mac_fraction"] = space.macs_of_kept(kept_now) / space.total_macs
    if apply:
        hist["masks"] = gates.apply()
    return gates, hist


# --------------------------------------------------------------------------- STE masks

class _STEMask(torch.autograd.Function):
    @staticmethod
    def forward(ctx, scores: torch.Tensor, hard: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return hard.to(scores.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        return grad, None  # straight through: d mask / d score := 1


class STEChannelMasks(_ChannelGateBase):
    """Learnable per-channel scores with a hard top-k mask and a straight-through gradient.

    Forward: the channels with the highest scores are kept (mask 1), the rest are zeroed (mask 0),
    exactly ``round(sparsity * n)`` removed per layer (``scope="layer"``, as edge-popup does per
    layer) or over all gated layers (``scope="global"``), with prunekit's allocation rule (ties,
    at least one channel per layer). Backward: ``dL/dscore = dL/dmask`` (straight-through), i.e.
    ``sum(dL/dy_c * y_c)`` over the channel's outputs, as in edge-popup (Ramanujan et al. 2020),
    which ranks by ``|score|``; here the score itself is ranked (initial scores are positive, so
    it is the same at the start, and a score pushed negative means "remove"). The same hard mask is
    used in train and eval mode. ``init="norm"`` starts from the L2 norms of the weight rows
    (magnitude pruning as the starting mask), ``"random"`` from ``U(0, 1)`` (edge-popup style).
    """

    def __init__(self, model: nn.Module, sparsity: float, include=None, exclude=None,
                 scope: str = "layer", init: str = "norm") -> None:
        sparsity = check_sparsity(sparsity)
        scope = check_scope(scope)
        if init not in ("norm", "random"):
            raise ValueError(f"init must be 'norm' or 'random', got {init!r}")
        super().__init__(model, include, exclude)
        self.target_sparsity, self.scope = sparsity, scope
        if init == "norm":
            values = {t.name: _row_norms(t.tensor.detach()) for t in self.targets}
        else:
            values = {t.name: torch.rand(t.shape[0]) for t in self.targets}
        self._init_params(values)
        self._cache: dict[str, torch.Tensor] | None = None

    def scores(self) -> dict[str, torch.Tensor]:
        return {n: self.param(n) for n in self.names}

    def keep(self) -> dict[str, torch.Tensor]:
        """The current hard top-k keep vectors ``{layer: bool [out]}``."""
        return allocate({n: s.detach() for n, s in self.scores().items()}, self.target_sparsity, self.scope,
                        min_keep=1)

    def gate(self, name: str, training: bool, batch: int | None = None) -> torch.Tensor:
        keep = self.keep()[name]
        return _STEMask.apply(self.param(name), keep)


def train_ste_masks(
    model: nn.Module,
    loader: Batches,
    sparsity: float,
    steps: int = 300,
    lr: float = 1e-3,
    seed: int = 0,
    *,
    weight_lr: float | None = 1e-3,
    scope: str = "layer",
    init: str = "norm",
    include=None,
    exclude=None,
    apply: bool = False,
    progress: bool = False,
) -> tuple[STEChannelMasks, dict[str, Any]]:
    """Learn STE channel masks with ``sparsity`` of the channels removed.

    The scores learn with Adam (``lr``); the weights are trained jointly with Adam (``weight_lr``),
    or frozen with ``weight_lr=None`` as in edge-popup. On the book's small models the frozen
    variant learns (the loss falls) but stays well below the joint one: edge-popup relies on a
    heavily over-parametrised random network and on weight-level (not channel-level) masks.

    Returns ``(learner, history)``: ``learner`` is the :class:`STEChannelMasks` module, attached
    to the model (its ``keep()`` gives the current ``{layer: bool [out]}``); ``history`` holds
    per-step ``"loss"`` and ``"flips"`` (channels whose keep bit changed).
    ``apply=True`` then applies the masks (:meth:`STEChannelMasks.apply`) and adds ``"masks"``,
    the parameter masks ``{name: bool tensor}`` now on the model.
    """
    check_model(model)
    sparsity = check_sparsity(sparsity)
    steps = check_int("steps", steps, 1)
    lr = check_positive("lr", lr)
    if weight_lr is not None:
        weight_lr = check_positive("weight_lr", weight_lr)
    seed = check_int("seed", seed, 0)
    check_scope(scope)
    _gate_targets(model, include, exclude)

    set_seed(seed, loader)   # a random initial score (init="random") and the batch order
    learner = STEChannelMasks(model, sparsity, include, exclude, scope=scope, init=init).attach()
    groups = [{"params": list(learner.parameters()), "lr": lr}]
    if weight_lr is not None:
        groups.append({"params": [p for p in model.parameters() if p.requires_grad], "lr": weight_lr})
    hist: dict[str, Any] = {"loss": [], "flips": []}
    prev = [learner.keep()]

    def count_flips(info: StepInfo) -> None:
        now = learner.keep()
        hist["loss"].append(info.loss)
        hist["flips"].append(sum(int((now[n] != prev[0][n]).sum()) for n in now))
        prev[0] = now

    try:
        train(model, loader, steps=steps, seed=None, progress=progress, param_groups=groups, callback=count_flips)
    finally:
        model.eval()
        model.zero_grad(set_to_none=True)
    if apply:
        hist["masks"] = learner.apply()
    return learner, hist
