"""Checks on the numpy images handed to the Predictor: clear errors, never silent coercion.

The one repair: non-finite pixels of a float thermal image (dead pixels, a radiometric
camera's NaN outside its range) are masked, i.e. replaced by finite values
(:func:`finite_thermal`), as long as they are at most :data:`MAX_NON_FINITE` of the frame; a
frame with more carries no usable picture and is rejected.
"""

import numpy as np

THERMAL_DTYPES = (np.uint8, np.uint16, np.float32, np.float64)
MAX_NON_FINITE = 0.5  # largest fraction of NaN / inf pixels a thermal frame may have


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
    """``thermal`` if it is a non-empty (H, W) uint8/uint16/float array, non-finite pixels masked.

    Returns:
        ``thermal`` itself, or for a float image with NaN / inf pixels a masked copy
        (:func:`finite_thermal`).

    Raises:
        ValueError: not such an array, or more than :data:`MAX_NON_FINITE` non-finite pixels.
    """
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
    return finite_thermal(thermal, name)[0]


def finite_thermal(thermal: np.ndarray, name: str = 'thermal') -> tuple[np.ndarray, int]:
    """Mask the NaN / inf pixels of a float thermal image.

    NaN becomes the median of the finite pixels (a neutral value for the per-frame percentile
    normalisation), +inf / -inf the largest / smallest finite value.

    Args:
        thermal: (H, W) thermal image, any dtype (integer images are returned unchanged).
        name: the input's name for the error message.

    Returns:
        (``thermal`` or a masked (H, W) copy of the same dtype, number of pixels masked).

    Raises:
        ValueError: more than :data:`MAX_NON_FINITE` of the pixels are NaN or inf.
    """
    if thermal.dtype.kind != 'f':
        return thermal, 0
    finite = np.isfinite(thermal)  # (H, W) bool
    bad = int(finite.size - np.count_nonzero(finite))
    if bad == 0:
        return thermal, 0
    if bad > MAX_NON_FINITE * finite.size:
        raise ValueError(f'{name}: {bad} of {finite.size} pixels ({bad / finite.size:.0%}) are '
                         f'NaN or inf (at most {MAX_NON_FINITE:.0%} can be masked)')
    values = thermal[finite]
    fill = np.where(np.isnan(thermal), np.median(values),
                    np.where(thermal > 0, values.max(), values.min()))
    return np.where(finite, thermal, fill).astype(thermal.dtype), bad
