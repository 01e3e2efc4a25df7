"""rnn-serve: torch.nn.RNN forward passes over HTTP, exactly as torch computes them."""

__version__ = "0.1.0"
