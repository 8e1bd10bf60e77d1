"""The word-level Transformer language model of DLwP 12.1: model, sampling, export, metrics."""
