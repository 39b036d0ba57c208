"""Checks on the numpy images handed to the Predictor: clear errors, never silent coercion."""

import numpy as np

THERMAL_DTYPES = (np.uint8, np.uint16, np.float32, np.float64)


def check_rgb(rgb: object, name: str = 'rgb') -> np.ndarray:
    """Return ``rgb`` if it is a non-empty (H, W, 3) uint8 array, else raise ValueError."""
    if not isinstance(rgb, np.ndarray):
        raise ValueError(
            f'{name}: expected a numpy array (H, W, 3) uint8, got {type(rgb).__name__}')
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f'{name}: expected shape (H, W, 3) RGB, got {rgb.shape}')
    if rgb.dtype != np.uint8:
        raise ValueError(f'{name}: expected dtype uint8, got {rgb.dtype}')
    if rgb.shape[0] == 0 or rgb.shape[1] == 0:
        raise ValueError(f'{name}: empty image {rgb.shape}')
    return rgb


def check_thermal(thermal: object, name: str = 'thermal') -> np.ndarray:
    """Return ``thermal`` if it is a non-empty finite (H, W) uint8/uint16/float array."""
    if not isinstance(thermal, np.ndarray):
        raise ValueError(
            f'{name}: expected a numpy array (H, W) uint8/uint16/float, '
            f'got {type(thermal).__name__}')
    if thermal.ndim != 2:
        raise ValueError(f'{name}: expected one channel, shape (H, W), got {thermal.shape}')
    if thermal.dtype not in THERMAL_DTYPES:
        raise ValueError(f'{name}: expected dtype uint8, uint16 or float, got {thermal.dtype}')
    if thermal.shape[0] == 0 or thermal.shape[1] == 0:
        raise ValueError(f'{name}: empty image {thermal.shape}')
    if thermal.dtype.kind == 'f' and not np.isfinite(thermal).all():
        raise ValueError(f'{name}: contains NaN or inf values')
    return thermal
