"""Export: ONNX graphs (backbone + heads) and merged-LoRA backbones (``univ export``)."""
