"""sensor_msgs/Image <-> numpy with cv_bridge semantics, in numpy only (no cv_bridge, no rclpy).

Functions read and write only the message fields they need (``height``, ``width``, ``encoding``,
``is_bigendian``, ``step``, ``data``, ``header``), so the same code serves rclpy messages (``data``
is an ``array.array('B')``) and ``rosbags`` messages (``data`` is a uint8 ndarray).

Canonical numpy layout, used both ways: colour is (H, W, 3) in RGB order (bgr8 / rgba8 / bgra8
are reordered, alpha dropped; 8UC3 is passed through as stored); one-channel images are (H, W).
Decoded arrays are read-only views of the message buffer where possible (copy them to keep or
modify them; BGR views have a negative channel stride). Camera-native colour encodings are
decoded to RGB copies (decode only): ``yuv422`` (UYVY), ``yuv422_yuy2`` (YUYV) and the 8-bit
Bayer mosaics ``bayer_{rggb,bggr,gbrg,grbg}8`` (OpenCV demosaicing, as cv_bridge).
"""

import array
import sys
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np


class ImageConversionError(ValueError):
    """An Image message that cannot be converted; ``kind`` names the problem.

    Kinds: 'encoding' (unsupported), 'step' (row shorter than a pixel row), 'data_length'
    (``data`` is not ``step * height`` bytes), 'empty' (0 pixels), 'dtype', 'compressed' (a
    CompressedImage that does not decode), 'channels' (decoded channels the camera cannot have).
    """

    def __init__(self, message: str, kind: str) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True)
class _Layout:
    dtype: str  # numpy kind + itemsize, byte order added per message ('u1', 'u2', 'f4')
    channels: int  # channels stored per pixel
    to_canonical: slice | None  # channel slice giving RGB from the stored channels
    cv2_code: int | None = None  # decode-only encodings: cv2.cvtColor code giving RGB


_KEEP = slice(None)
_LAYOUTS = {
    'rgb8': _Layout('u1', 3, _KEEP),
    'bgr8': _Layout('u1', 3, slice(None, None, -1)),
    'rgba8': _Layout('u1', 4, slice(0, 3)),
    'bgra8': _Layout('u1', 4, slice(2, None, -1)),
    '8UC3': _Layout('u1', 3, _KEEP),
    'mono8': _Layout('u1', 1, None),
    '8UC1': _Layout('u1', 1, None),
    'mono16': _Layout('u2', 1, None),
    '16UC1': _Layout('u2', 1, None),
    '32FC1': _Layout('f4', 1, None),
    # Decode only. OpenCV names a Bayer pattern by its second row (cv_bridge's mapping).
    'yuv422': _Layout('u1', 2, _KEEP, cv2.COLOR_YUV2RGB_UYVY),
    'yuv422_yuy2': _Layout('u1', 2, _KEEP, cv2.COLOR_YUV2RGB_YUY2),
    'bayer_rggb8': _Layout('u1', 1, _KEEP, cv2.COLOR_BayerBG2RGB),
    'bayer_bggr8': _Layout('u1', 1, _KEEP, cv2.COLOR_BayerRG2RGB),
    'bayer_gbrg8': _Layout('u1', 1, _KEEP, cv2.COLOR_BayerGR2RGB),
    'bayer_grbg8': _Layout('u1', 1, _KEEP, cv2.COLOR_BayerGB2RGB),
}
CAMERA_ENCODINGS = tuple(e for e, layout in _LAYOUTS.items() if layout.cv2_code is not None)
ENCODINGS = tuple(e for e in _LAYOUTS if e not in CAMERA_ENCODINGS)  # decoded and written
COLOUR_ENCODINGS = ('rgb8', 'bgr8', 'rgba8', 'bgra8', '8UC3', *CAMERA_ENCODINGS)
THERMAL_ENCODINGS = ('mono8', 'mono16', '8UC1', '16UC1', '32FC1')
MASK_UNLABELED = {'mono8': 255, 'mono16': 65535}  # pixel value meaning "no class"
_LUMA_RGB = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # ITU-R BT.601, as OpenCV


def _layout(encoding: str) -> _Layout:
    if encoding not in _LAYOUTS:
        raise ImageConversionError(
            f'Image encoding {encoding!r} is not supported; expected one of '
            f'{ENCODINGS + CAMERA_ENCODINGS}',
            'encoding',
        )
    return _LAYOUTS[encoding]


def _message_bytes(data: Any) -> np.ndarray:
    """``msg.data`` as a 1-D uint8 array, sharing memory when it exposes a buffer."""
    if isinstance(data, np.ndarray):
        if data.dtype != np.uint8:
            raise ImageConversionError(f'Image data must be uint8, got dtype {data.dtype}',
                                       'dtype')
        return np.ascontiguousarray(data).reshape(-1)
    try:
        return np.frombuffer(data, dtype=np.uint8)  # array.array('B'), bytes, memoryview
    except TypeError:
        return np.asarray(data, dtype=np.uint8).reshape(-1)  # a plain sequence: copied


def image_to_numpy(msg: Any) -> np.ndarray:
    """Decode a sensor_msgs/Image into the canonical layout (cv_bridge 'passthrough' + RGB).

    Honours ``step`` row padding and ``is_bigendian``; zero-copy unless the byte order differs
    from this machine's or the encoding is decode-only (YUV, Bayer). The result is read-only.

    Args:
        msg: any object with the Image fields (rclpy or rosbags message).

    Returns:
        (H, W, 3) uint8 RGB for colour encodings; (H, W) uint8 / uint16 / float32 (native byte
        order) for one-channel encodings.

    Raises:
        ImageConversionError: unknown encoding, ``step`` shorter than a row, ``data`` length
            not ``step * height``, or no pixels.
    """
    encoding = str(msg.encoding)
    layout = _layout(encoding)
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    dtype = np.dtype(layout.dtype).newbyteorder('>' if msg.is_bigendian else '<')
    pixel_bytes = dtype.itemsize * layout.channels
    if step < width * pixel_bytes:
        raise ImageConversionError(
            f'Image step {step} is smaller than width * bytes per pixel = {width * pixel_bytes} '
            f'(width {width}, encoding {encoding})',
            'step',
        )
    if height == 0 or width == 0:
        raise ImageConversionError(f'Image is empty ({width}x{height})', 'empty')
    buffer = _message_bytes(msg.data)
    if buffer.size != step * height:
        raise ImageConversionError(
            f'Image data has {buffer.size} bytes, expected step * height = {step * height} '
            f'(step {step}, height {height}, encoding {encoding})',
            'data_length',
        )
    # (H, W, C) view over the padded rows: row stride = step, pixel stride = C * itemsize
    pixels = np.ndarray(
        (height, width, layout.channels),
        dtype=dtype,
        buffer=buffer,
        strides=(step, pixel_bytes, dtype.itemsize),
    )
    if not dtype.isnative:
        pixels = pixels.astype(dtype.newbyteorder('='))  # byte-swapping copy
    if layout.cv2_code is not None:
        if encoding.startswith('bayer') and (height % 2 or width % 2):
            raise ImageConversionError(
                f'Bayer image {width}x{height} must have an even width and height', 'data_length'
            )
        if layout.channels == 2 and width % 2:  # YUV 4:2:2: two pixels share one U and V
            raise ImageConversionError(
                f'{encoding} image {width}x{height} must have an even width', 'data_length')
        stored = np.ascontiguousarray(pixels if layout.channels > 1 else pixels[..., 0])
        image = cv2.cvtColor(stored, layout.cv2_code)  # (H, W, 3) RGB, a new array
    elif layout.to_canonical is None:
        image = pixels[..., 0]  # (H, W)
    else:
        image = pixels[..., layout.to_canonical]  # (H, W, 3) RGB
    image.flags.writeable = False
    return image


def rgb_from_msg(msg: Any) -> np.ndarray:
    """The RGB camera's image: (H, W, 3) uint8 RGB, read-only (see :func:`image_to_numpy`).

    Raises:
        ImageConversionError: an encoding other than ``COLOUR_ENCODINGS``, or a bad layout.
    """
    if msg.encoding not in COLOUR_ENCODINGS:
        raise ImageConversionError(
            f'RGB camera image has encoding {msg.encoding!r}; expected one of '
            f'{COLOUR_ENCODINGS}',
            'encoding',
        )
    return image_to_numpy(msg)


def thermal_from_msg(msg: Any) -> np.ndarray:
    """The thermal camera's image as one channel, read-only.

    One-channel encodings pass through (uint8 [0, 255]; uint16 raw counts; float32 as the
    camera sends, e.g. kelvin). Colour-encoded thermal is reduced to one uint8 channel: a grey
    image (all channels equal) gives its first channel without copying, a false-colour one gives
    its BT.601 luma.

    Returns:
        (H, W) uint8 | uint16 | float32.

    Raises:
        ImageConversionError: an encoding outside ``THERMAL_ENCODINGS + COLOUR_ENCODINGS``.
    """
    if msg.encoding in THERMAL_ENCODINGS:
        return image_to_numpy(msg)
    if msg.encoding not in COLOUR_ENCODINGS:
        raise ImageConversionError(
            f'thermal camera image has encoding {msg.encoding!r}; expected one of '
            f'{THERMAL_ENCODINGS + COLOUR_ENCODINGS}',
            'encoding',
        )
    return grey_from_colour(image_to_numpy(msg))


def grey_from_colour(rgb: np.ndarray) -> np.ndarray:
    """Args: rgb: (H, W, 3) uint8. Returns (H, W) uint8, a view when the image is grey."""
    first = rgb[..., 0]
    if np.array_equal(first, rgb[..., 1]) and np.array_equal(first, rgb[..., 2]):
        return first
    grey = np.rint(rgb @ _LUMA_RGB).astype(np.uint8)  # (H, W)
    grey.flags.writeable = False
    return grey


def _stored_pixels(image: np.ndarray, encoding: str, layout: _Layout) -> np.ndarray:
    """Canonical array -> (H, W, C) native-order array in the encoding's stored channel order."""
    expected = np.dtype(layout.dtype)
    if image.dtype.kind != expected.kind or image.dtype.itemsize != expected.itemsize:
        raise ValueError(
            f'array dtype {image.dtype} does not match encoding {encoding!r} (expected '
            f'{expected.newbyteorder("=")})'
        )
    canonical_channels = 1 if layout.to_canonical is None else 3
    if canonical_channels == 1 and image.ndim != 2:
        raise ValueError(f'encoding {encoding!r} needs an (H, W) array, got {image.shape}')
    if canonical_channels == 3 and (image.ndim != 3 or image.shape[2] != 3):
        raise ValueError(f'encoding {encoding!r} needs an (H, W, 3) RGB array, got {image.shape}')
    image = image.astype(expected.newbyteorder('='), copy=False)
    if canonical_channels == 1:
        return image[..., None]  # (H, W, 1)
    if encoding in ('bgr8', 'bgra8'):
        image = image[..., ::-1]  # (H, W, 3) BGR
    if layout.channels == 4:
        alpha = np.full(image.shape[:2] + (1,), 255, dtype=np.uint8)
        image = np.concatenate([image, alpha], axis=2)  # (H, W, 4)
    return image


def fill_image(msg: Any, image: np.ndarray, encoding: str, header: Any = None) -> Any:
    """Fill an already constructed Image message (rclpy or rosbags) from a canonical array.

    Writes ``height``, ``width``, ``encoding``, ``is_bigendian`` (this machine's order), an
    unpadded ``step`` and a copy of the pixels into ``data`` (an ``array.array('B')`` unless the
    message already holds an ndarray, as rosbags messages do).

    Args:
        msg: the message to fill.
        image: the canonical layout of :func:`image_to_numpy` for ``encoding``: (H, W, 3) uint8
            RGB for colour encodings (alpha is written as 255), (H, W) uint8 / uint16 / float32
            for one-channel ones.
        encoding: one of ``ENCODINGS`` (``CAMERA_ENCODINGS`` are decoded only).
        header: assigned to ``msg.header`` when given (a Header of the message's own library).

    Returns:
        ``msg``.
    """
    layout = _layout(encoding)
    if layout.cv2_code is not None:
        raise ValueError(f'encoding {encoding!r} is decoded only; write rgb8 or bgr8')
    stored = np.ascontiguousarray(_stored_pixels(np.asarray(image), encoding, layout))
    height, width = stored.shape[:2]
    flat = stored.reshape(-1).view(np.uint8)  # (H * W * C * itemsize,) bytes, row-major
    if isinstance(msg.data, np.ndarray):
        data = flat.copy() if np.may_share_memory(flat, image) else flat
    else:
        data = array.array('B')
        data.frombytes(flat)
    msg.height = height
    msg.width = width
    msg.encoding = encoding
    msg.is_bigendian = int(sys.byteorder == 'big')
    msg.step = width * layout.channels * stored.dtype.itemsize
    msg.data = data
    if header is not None:
        msg.header = header
    return msg


def mask_encoding(num_classes: int) -> str:
    """Encoding for a class-index mask: 'mono8' up to 254 classes, else 'mono16'.

    The largest value of each (``MASK_UNLABELED``) is reserved for unlabeled pixels.
    """
    if not 1 <= num_classes <= 65534:
        raise ValueError(f'num_classes must be in [1, 65534], got {num_classes}')
    return 'mono8' if num_classes <= 254 else 'mono16'


def stamp_seconds(header: Any) -> float:
    """``header.stamp`` (builtin_interfaces/Time) as float seconds."""
    return header.stamp.sec + header.stamp.nanosec * 1e-9
