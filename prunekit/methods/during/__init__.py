"""Pruning during training (PDT): masks that change as the weights train."""
