"""sensor_msgs/CompressedImage <-> numpy (what image_transport's ``compressed`` plugin sends).

``format`` is e.g. ``'rgb8; jpeg compressed bgr8'``, ``'mono16; png compressed mono16'`` or
just ``'jpeg'``; the payload is decoded with OpenCV (JPEG, PNG, 8 or 16 bit). The result uses
the canonical layout of :mod:`univ_ros.conversions`. ``compressedDepth`` (a 12-byte header
before the PNG) is not supported. Like the conversions, only message fields are read, so
rclpy and rosbags messages both work. :data:`DECODERS` is the one table the node and the bag
tools pick a camera's decoder from.
"""

from collections.abc import Callable
from typing import Any

import cv2
import numpy as np

from univ_ros import conversions as conv
from univ_ros.conversions import ImageConversionError, grey_from_colour

CODECS = ('jpeg', 'png')


def _decode(msg: Any) -> np.ndarray:
    """The payload as (H, W) or (H, W, 3|4) BGR(A), uint8 or uint16."""
    fmt = str(msg.format)
    if 'compressedDepth' in fmt:
        raise ImageConversionError(
            f'CompressedImage format {fmt!r} (compressedDepth) is not supported; publish the '
            'thermal camera raw or with the compressed (png) transport', 'encoding')
    data = msg.data if isinstance(msg.data, np.ndarray) else np.frombuffer(bytes(msg.data),
                                                                           np.uint8)
    image = cv2.imdecode(np.asarray(data, np.uint8), cv2.IMREAD_UNCHANGED) if len(data) else None
    if image is None or image.size == 0:
        raise ImageConversionError(
            f'CompressedImage ({len(data)} bytes, format {fmt!r}) does not decode as JPEG or '
            'PNG', 'compressed')
    return image


def rgb_from_compressed(msg: Any) -> np.ndarray:
    """The RGB camera's CompressedImage as (H, W, 3) uint8 RGB.

    Raises:
        ImageConversionError: undecodable data, or not 8-bit colour.
    """
    image = _decode(msg)
    if image.dtype != np.uint8 or image.ndim != 3:
        raise ImageConversionError(
            f'RGB camera CompressedImage decodes to {image.dtype} with shape {image.shape}; '
            'expected 8-bit colour (jpeg/png of rgb8 or bgr8)', 'channels')
    code = cv2.COLOR_BGRA2RGB if image.shape[2] == 4 else cv2.COLOR_BGR2RGB
    return cv2.cvtColor(image, code)  # (H, W, 3) RGB


def thermal_from_compressed(msg: Any) -> np.ndarray:
    """The thermal camera's CompressedImage as (H, W) uint8 or uint16.

    Colour payloads are reduced to grey as for raw images
    (:func:`univ_ros.conversions.grey_from_colour`).

    Raises:
        ImageConversionError: undecodable data, or a colour image that is not 8-bit.
    """
    image = _decode(msg)
    if image.ndim == 2:
        return image
    if image.dtype != np.uint8:
        raise ImageConversionError(
            f'thermal CompressedImage decodes to {image.shape[2]} channels of {image.dtype}; '
            'expected one channel (mono8 / mono16 png) or 8-bit colour', 'channels')
    code = cv2.COLOR_BGRA2RGB if image.shape[2] == 4 else cv2.COLOR_BGR2RGB
    return grey_from_colour(cv2.cvtColor(image, code))


def compress(image: np.ndarray, encoding: str, codec: str = 'png',
             jpeg_quality: int = 95) -> tuple[str, bytes]:
    """(format, payload) of ``image`` as image_transport's ``compressed`` plugin writes them.

    Args:
        image: (H, W, 3) uint8 RGB (``rgb8``) or (H, W) uint8 / uint16 (``mono8`` / ``mono16``).
        encoding: the raw image's encoding, one of those three.
        codec: 'png' (lossless) or 'jpeg'; ``mono16`` is always PNG (JPEG has no 16 bit).
        jpeg_quality: 0-100, for JPEG.
    """
    if codec not in CODECS or encoding not in ('rgb8', 'mono8', 'mono16'):
        raise ValueError(f'compress: codec {codec!r} must be one of {CODECS} and encoding '
                         f'{encoding!r} rgb8, mono8 or mono16')
    codec = 'png' if encoding == 'mono16' else codec
    target = 'bgr8' if encoding == 'rgb8' else encoding
    pixels = cv2.cvtColor(image, cv2.COLOR_RGB2BGR) if encoding == 'rgb8' else image
    params = [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality] if codec == 'jpeg' else []
    ok, payload = cv2.imencode(f'.{"jpg" if codec == "jpeg" else "png"}', pixels, params)
    if not ok:
        raise ValueError(f'compress: OpenCV could not encode a {image.shape} {image.dtype} '
                         f'image as {codec}')
    return f'{encoding}; {codec} compressed {target}', payload.tobytes()


# (camera, transport) -> message to (H, W, 3) uint8 RGB / (H, W) uint8|uint16 thermal
DECODERS: dict[tuple[str, str], Callable[[Any], np.ndarray]] = {
    ('rgb', 'raw'): conv.rgb_from_msg,
    ('thermal', 'raw'): conv.thermal_from_msg,
    ('rgb', 'compressed'): rgb_from_compressed,
    ('thermal', 'compressed'): thermal_from_compressed,
}
