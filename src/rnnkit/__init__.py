"""rnnkit: text classification with recurrent networks in PyTorch."""

__version__ = "0.1.0"
