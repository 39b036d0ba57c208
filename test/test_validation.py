"""Non-finite thermal pixels: masked when few, the frame rejected when most are."""

import numpy as np
import pytest

from univ_core.inference.validation import MAX_NON_FINITE, check_thermal, finite_thermal


def kelvin(seed: int = 0) -> np.ndarray:
    """(48, 64) float32 temperatures in kelvin, as a radiometric camera's 32FC1."""
    return np.random.default_rng(seed).normal(295, 4, (48, 64)).astype(np.float32)


def test_a_few_non_finite_pixels_are_masked_not_fatal() -> None:
    image = kelvin()
    finite = image.copy()
    image[0, 0], image[5, 7], image[9, 9] = np.nan, np.inf, -np.inf
    masked, count = finite_thermal(image)
    assert count == 3 and masked.dtype == np.float32 and np.isfinite(masked).all()
    values = image[np.isfinite(image)]
    assert masked[0, 0] == np.median(values)
    assert (masked[5, 7], masked[9, 9]) == (values.max(), values.min())
    keep = np.isfinite(image)
    np.testing.assert_array_equal(masked[keep], finite[keep])  # the rest is untouched
    assert np.isnan(image[0, 0])  # the input (a read-only message view) is not modified
    np.testing.assert_array_equal(check_thermal(image), masked)


def test_mostly_non_finite_frames_are_rejected_with_the_count() -> None:
    image = kelvin()
    image.flat[: int(image.size * MAX_NON_FINITE) + 1] = np.nan
    with pytest.raises(ValueError, match=r'thermal: 1537 of 3072 pixels \(50%\) are NaN'):
        check_thermal(image)


def test_integer_and_finite_images_pass_through_as_they_are() -> None:
    for image in (np.arange(12, dtype=np.uint16).reshape(3, 4), kelvin()):
        result, count = finite_thermal(image)
        assert result is image and count == 0
