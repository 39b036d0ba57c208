"""Inference: :class:`Predictor` (numpy in, numpy out) and its loader."""

from pathlib import Path

from univ_core.data.thermal import ThermalNorm
from univ_core.inference.config import PredictorConfig
from univ_core.inference.predictor import Detections, Prediction, Predictor

__all__ = ['Detections', 'Prediction', 'Predictor', 'PredictorConfig', 'ThermalNorm',
           'load_predictor']


def load_predictor(config: PredictorConfig) -> Predictor:
    """A Predictor for the model file ``config.model`` ('' = the default model).

    A ``.onnx`` file (``univ export``) runs on onnxruntime (``config.backend='onnxruntime'``).
    """
    from univ_core.models.model_file import default_model_path, load_model

    if config.model.endswith('.onnx'):
        from univ_core.inference.onnx_backend import load_onnx_predictor

        return load_onnx_predictor(config)

    model, spec = load_model(Path(config.model) if config.model else default_model_path())
    return Predictor(model, spec.seg_classes, spec.det_classes, spec.input_size, config,
                     spec.palette)
