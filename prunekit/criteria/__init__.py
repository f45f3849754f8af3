"""Pruning criteria: how important is each weight (or channel)?

A criterion maps a model to ``{parameter_name: score}``; a higher score means more
important, so it is kept longer. Criteria register themselves with
:func:`register` (module :mod:`.registry`); :func:`available` lists them and
:func:`prunekit.score` runs one. :func:`registered` adds one for a ``with`` block only.

The survey groups criteria into magnitude, l_p norm, sensitivity/saliency and loss
change (Cheng et al. 2024, Sec. 4). One module per family:

* :mod:`.magnitude` — ``magnitude`` and ``random``, the two baselines every pruning study
  needs (Blalock et al. 2020);
* :mod:`.norm` — ``lamp`` (weights), ``l1_filter`` and ``fpgm`` (channels): data-free norms;
* :mod:`.sensitivity` — ``taylor``, ``taylor_channel``, ``snip``, ``grasp``, ``obd``:
  gradients (and Hessians) of the loss on data;
* :mod:`.movement` — ``movement`` and :class:`~prunekit.criteria.movement.MovementTracker`;
* :mod:`.synflow` — ``synflow`` (data-free, one forward/backward); its iterative schedule
  is :func:`prunekit.methods.before.synflow.prune_synflow`;
* :mod:`.activation` — ``apoz``, ``mean_activation``, ``hrank``: statistics of the
  post-ReLU feature maps of each channel;
* :mod:`.bn_scale` — ``bn_scale``: |gamma| of the BatchNorm after a layer (Network Slimming);
* :mod:`.loss_change` — ``loss_change``: the measured loss increase when a channel is zeroed;
* :mod:`.reconstruction` — ``thinet``, ``lasso_channel`` (channels) and ``obs`` (weights): the
  next layer's (or the layer's own) output reconstructed on data (ThiNet, He et al. 2017, OBS);
  the procedures that prune with them and re-fit the kept weights (``thinet_prune``,
  ``lasso_channel_prune``, ``obs_prune``) are in :mod:`prunekit.methods.after.reconstruction`.

Common conventions (all criteria):

* keys are the logical parameter names of the targets; weight-level scores have the
  parameter's shape, channel-level scores shape ``[out_channels]``;
* scores are computed on the *effective* weight of a masked model (``weight_orig *
  weight_mask``) and, for gradient criteria, with gradients w.r.t. that effective weight;
* data-driven criteria take ``data`` (an iterable of ``(inputs, targets)``), ``batches=``
  (how many to use, default all), ``loss_fn=`` (default cross-entropy, where a loss is used)
  and run the model in eval mode (``mode="train"`` uses batch statistics instead);
* the model is left exactly as it was: weights, buffers (BatchNorm running statistics),
  ``requires_grad`` flags, ``.grad`` fields, train/eval mode and hooks.

To write a criterion of your own, see :mod:`prunekit.criteria.api` (``pk.criteria.api``):
:func:`register` plus the helpers the built-in gradient criteria use.
"""

from __future__ import annotations

from . import registry
from .registry import LEVELS, Criterion, ScoreFn, available, get, register, registered, score, unregister
from . import _common  # noqa: F401  (the helpers the built-in criteria share)
from . import magnitude, norm, sensitivity, movement, synflow, activation, bn_scale, loss_change, reconstruction
from . import api

registry._mark_built_in()   # the criteria registered by the modules above come with prunekit

__all__ = ["Criterion", "LEVELS", "ScoreFn", "available", "get", "register", "registered", "score", "unregister",
           "api", "registry", "activation", "bn_scale", "loss_change", "magnitude", "movement", "norm",
           "reconstruction", "sensitivity", "synflow"]
