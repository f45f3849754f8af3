"""Learning to prune: the mask or the per-layer ratios are learned rather than scored.

* :mod:`.regularization` -- sparsity regularisation: L1, group lasso (SSL), Network Slimming;
* :mod:`.mask_learning` -- learned channel masks: hard-concrete L0 gates, straight-through masks;
* :mod:`.search_space` -- per-layer channel ratios of a model, their exact MACs and reward;
* :mod:`.amc` -- reinforcement learning of the ratios, AMC-style (REINFORCE agent);
* :mod:`.metapruning` -- a PruningNet that generates weights for any widths + evolutionary search;
* :mod:`.gnn` -- a graph neural network over the layer graph that predicts the ratios (AGMC-style).
"""

__all__ = ["amc", "gnn", "mask_learning", "metapruning", "regularization", "search_space"]
