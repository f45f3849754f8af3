"""One traced graph per model, shared by everything that follows channels or layers.

* :mod:`.trace` -- one ``torch.fx`` trace with shapes per model (cached, mask-safe,
  mode-preserving);
* :mod:`.ops` -- one classification of per-channel operations (named properties);
* :mod:`.spaces`, :mod:`.tracer`, :mod:`.rules` -- channel spaces, the walk, and one rule per
  construct family behind a registry (:func:`register_rule`);
* :mod:`.channels` -- the channel planner (:func:`plan_channels`, :class:`ChannelPlan`);
* :mod:`.queries` -- the BatchNorm or ReLU after a layer, ThiNet's next layer, producers and
  consumers.
"""

from .channels import ChannelPlan, plan_channels
from .queries import consumers, following, following_batchnorm, following_relu, next_layers, producers
from .rules import register_rule, unregister_rule
from .trace import clear_cache, trace

__all__ = ["ChannelPlan", "plan_channels", "register_rule", "unregister_rule", "trace", "clear_cache",
           "following", "following_batchnorm", "following_relu", "next_layers", "producers", "consumers"]
