"""Export a trained model: ONNX (checked by onnxruntime in tests) or a safetensors bundle."""

from .bundle import export_checkpoint

__all__ = ["export_checkpoint"]
