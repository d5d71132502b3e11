"""The training loop, loss and optimiser."""
