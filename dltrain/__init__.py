"""dltrain: train neural networks from YAML specs on its own autodiff engine."""

__version__ = "0.1.0"
