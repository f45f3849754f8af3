"""Pruning after training (PAT): a trained network is pruned, then fine-tuned."""
