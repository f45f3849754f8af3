"""The schedule axis: how much to prune, and how often (one-shot, iterative, AGP, cosine drop
fraction, dynamic drop/grow)."""
