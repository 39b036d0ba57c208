"""Image decoding for RGB-T pairs: RGB, single-channel thermal, and MFNet 4-channel PNG.

Everything decodes through OpenCV from bytes (so non-ASCII paths work) and ignores EXIF
orientation, so the two images of a pair keep the pixel grid they were registered on (the
official UNIV code opens both with PIL, which does not rotate either).
"""

from pathlib import Path

import cv2
import numpy as np

# Mean per-pixel channel spread (in 8-bit grey levels) above which a 3-channel thermal image
# is taken to be pseudo-colour rather than grey saved as colour (JPEG chroma noise stays below).
MAX_GREY_SPREAD = 4.0


def _decode(path: str | Path, flags: int) -> np.ndarray:
    """Decode ``path`` with ``cv2.imdecode``; FileNotFoundError / ValueError name the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f'image file {path} not found')
    image = cv2.imdecode(np.fromfile(path, np.uint8), flags)
    if image is None or image.size == 0:
        raise ValueError(f'image file {path} cannot be decoded (corrupt or not an image)')
    return image


def read_rgb(path: str | Path) -> np.ndarray:
    """Read a visible image.

    Args:
        path: any format OpenCV decodes; grey images are replicated to 3 channels and an
            alpha channel is dropped.

    Returns:
        (H, W, 3) uint8 RGB.
    """
    bgr = _decode(path, cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
    return np.ascontiguousarray(bgr[..., ::-1])  # (H, W, 3) BGR -> RGB


def _one_channel(image: np.ndarray, path: Path) -> np.ndarray:
    """(H, W, C) thermal stored as colour -> (H, W) of the same dtype."""
    channels = image[..., :3]  # (H, W, 3): drop an alpha channel
    if (channels == channels[..., :1]).all():
        return np.ascontiguousarray(channels[..., 0])
    full_scale = 255.0 if image.dtype == np.uint8 else float(np.iinfo(image.dtype).max)
    spread = channels.max(axis=-1).astype(np.float64) - channels.min(axis=-1)  # (H, W)
    if spread.mean() * 255.0 / full_scale > MAX_GREY_SPREAD:
        raise ValueError(f'thermal image {path} has differing colour channels (mean spread '
                         f'{spread.mean():.1f}); expected grey (pseudo-colour is not supported)')
    return cv2.cvtColor(channels, cv2.COLOR_BGR2GRAY)  # (H, W): JPEG noise between channels


def read_thermal(path: str | Path) -> np.ndarray:
    """Read a thermal image, keeping its bit depth.

    Args:
        path: 1-channel image, or grey stored as 3 (or 4, with alpha) channels; 8 or 16 bit.

    Returns:
        (H, W) uint8 or uint16 raw intensities.
    """
    path = Path(path)
    image = _decode(path, cv2.IMREAD_UNCHANGED)
    if image.dtype not in (np.uint8, np.uint16):
        raise ValueError(f'thermal image {path} has dtype {image.dtype}; expected 8 or 16 bit')
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[..., 0]  # (H, W)
    if image.ndim == 3 and image.shape[2] in (3, 4):
        image = _one_channel(image, path)
    if image.ndim != 2:
        raise ValueError(f'thermal image {path} has shape {image.shape}; expected 1 or 3 channels')
    return image


def read_mfnet(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Read an MFNet image: one PNG holding R, G, B and thermal as its 4 channels.

    Args:
        path: 4-channel 8-bit PNG (OpenCV decodes it as B, G, R, thermal-as-alpha).

    Returns:
        rgb: (H, W, 3) uint8 RGB; thermal: (H, W) uint8.
    """
    path = Path(path)
    image = _decode(path, cv2.IMREAD_UNCHANGED)
    if image.ndim != 3 or image.shape[2] != 4:
        raise ValueError(f'MFNet image {path} has shape {image.shape}; expected (H, W, 4) '
                         'holding RGB + thermal')
    rgb = np.ascontiguousarray(image[..., 2::-1])  # (H, W, 3): B, G, R -> R, G, B
    thermal = np.ascontiguousarray(image[..., 3])  # (H, W): 4th channel is thermal
    return rgb, thermal


def read_rgbt_png(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Same as :func:`read_mfnet` (the name the labelled-dataset code uses)."""
    return read_mfnet(path)


def read_label_image(path: str | Path) -> np.ndarray:
    """Read a label image as stored (no colour conversion).

    Returns:
        (H, W) or (H, W, C) array of the file's dtype; channel order B, G, R when coloured.
    """
    return _decode(path, cv2.IMREAD_UNCHANGED)


def read_pair(rgb_path: str | Path, ir_path: str | Path, name: str = ''
              ) -> tuple[np.ndarray, np.ndarray]:
    """Read one registered pair; the same path twice means one MFNet 4-channel PNG.

    Returns:
        rgb: (H, W, 3) uint8 RGB; thermal: (H, W) uint8 or uint16, of the same H, W.

    Raises:
        ValueError: the two images differ in size (pairs must share one pixel grid: no silent
            resize here).
    """
    if Path(rgb_path) == Path(ir_path):
        return read_mfnet(rgb_path)
    rgb, thermal = read_rgb(rgb_path), read_thermal(ir_path)
    if rgb.shape[:2] != thermal.shape:
        (rh, rw), (th, tw) = rgb.shape[:2], thermal.shape
        raise ValueError(f'pair {name!r}: RGB {rgb_path} is {rw}x{rh} but thermal {ir_path} is '
                         f'{tw}x{th} (W x H); pairs must be registered to one pixel grid')
    return rgb, thermal
