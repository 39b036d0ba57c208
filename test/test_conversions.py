"""Image conversions against real rclpy (ROS 2 Jazzy) messages and rosbags messages alike.

YUV, Bayer and CompressedImage decoding are checked on a real MSRS image.
"""

import cv2
import numpy as np
import pytest
from rclpy.serialization import deserialize_message, serialize_message
from rosbags.typesys import Stores, get_typestore
from sensor_msgs.msg import CompressedImage as RclpyCompressedImage
from sensor_msgs.msg import Image as RclpyImage
from std_msgs.msg import Header as RclpyHeader

from univ_ros.compressed import rgb_from_compressed, thermal_from_compressed
from univ_ros.conversions import (
    COLOUR_ENCODINGS,
    ENCODINGS,
    MASK_UNLABELED,
    ImageConversionError,
    fill_image,
    image_to_numpy,
    mask_encoding,
    rgb_from_msg,
    stamp_seconds,
    thermal_from_msg,
)

TYPESTORE = get_typestore(Stores.ROS2_JAZZY)
BagImage = TYPESTORE.types['sensor_msgs/msg/Image']
BagHeader = TYPESTORE.types['std_msgs/msg/Header']
BagTime = TYPESTORE.types['builtin_interfaces/msg/Time']
H, W = 5, 7


def canonical(encoding, seed=0):
    """A random array in the layout image_to_numpy returns for ``encoding``."""
    rng = np.random.default_rng(seed)
    if encoding in COLOUR_ENCODINGS:
        return rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    if encoding in ('mono8', '8UC1'):
        return rng.integers(0, 256, (H, W), dtype=np.uint8)
    if encoding in ('mono16', '16UC1'):
        return rng.integers(0, 65536, (H, W), dtype=np.uint16)
    return rng.normal(300, 20, (H, W)).astype(np.float32)


def empty_bag_image():
    header = BagHeader(stamp=BagTime(sec=0, nanosec=0), frame_id='')
    return BagImage(
        header=header,
        height=0,
        width=0,
        encoding='',
        is_bigendian=0,
        step=0,
        data=np.zeros(0, np.uint8),
    )


def raw_message(cls_name, data, encoding, height, width, step, bigendian=0):
    """A message built field by field, the way a camera driver fills one."""
    if cls_name == 'rclpy':
        msg = RclpyImage(
            height=height, width=width, encoding=encoding, step=step, is_bigendian=bigendian
        )
        msg.data = bytes(data)
        return msg
    msg = empty_bag_image()
    msg.height, msg.width, msg.encoding, msg.step = height, width, encoding, step
    msg.is_bigendian, msg.data = bigendian, np.frombuffer(bytes(data), np.uint8).copy()
    return msg


@pytest.mark.parametrize('encoding', ENCODINGS)
def test_round_trip_through_rclpy_serialization(encoding):
    image = canonical(encoding)
    msg = fill_image(RclpyImage(), image, encoding, RclpyHeader(frame_id='cam'))
    assert (msg.height, msg.width, msg.encoding, msg.header.frame_id) == (H, W, encoding, 'cam')
    np.testing.assert_array_equal(image_to_numpy(msg), image)
    received = deserialize_message(serialize_message(msg), RclpyImage)
    decoded = image_to_numpy(received)
    assert decoded.dtype == image.dtype and decoded.shape == image.shape
    np.testing.assert_array_equal(decoded, image)


@pytest.mark.parametrize('encoding', ENCODINGS)
def test_round_trip_through_rosbags_cdr(encoding):
    image = canonical(encoding, seed=1)
    msg = fill_image(empty_bag_image(), image, encoding)
    assert isinstance(msg.data, np.ndarray) and not np.shares_memory(msg.data, image)
    raw = TYPESTORE.serialize_cdr(msg, BagImage.__msgtype__)
    received = TYPESTORE.deserialize_cdr(raw, BagImage.__msgtype__)
    decoded = image_to_numpy(received)
    assert decoded.dtype == image.dtype and decoded.shape == image.shape
    np.testing.assert_array_equal(decoded, image)
    assert np.shares_memory(decoded, received.data)  # zero-copy from the deserialised buffer


def test_stored_channel_order_follows_the_encoding():
    pixel = np.array([[[10, 20, 30]]], np.uint8)  # one RGB pixel
    expected = {
        'rgb8': [10, 20, 30],
        'bgr8': [30, 20, 10],
        'rgba8': [10, 20, 30, 255],
        'bgra8': [30, 20, 10, 255],
        '8UC3': [10, 20, 30],
    }
    for encoding, stored in expected.items():
        msg = fill_image(RclpyImage(), pixel, encoding)
        assert list(msg.data) == stored, encoding
        assert msg.step == len(stored)


@pytest.mark.parametrize('cls_name', ['rclpy', 'rosbags'])
@pytest.mark.parametrize(
    'encoding', ['rgb8', 'bgr8', 'rgba8', 'bgra8', 'mono8', 'mono16', '32FC1']
)
def test_zero_copy_views_of_the_message_buffer(cls_name, encoding):
    msg = fill_image(
        RclpyImage() if cls_name == 'rclpy' else empty_bag_image(), canonical(encoding), encoding
    )
    decoded = image_to_numpy(msg)
    assert np.shares_memory(decoded, np.frombuffer(msg.data, np.uint8))
    assert not decoded.flags.writeable


@pytest.mark.parametrize('cls_name', ['rclpy', 'rosbags'])
def test_step_row_padding_is_skipped(cls_name):
    image = canonical('rgb8')
    step = W * 3 + 5
    rows = np.full((H, step), 0xEE, np.uint8)  # padding bytes are garbage
    rows[:, : W * 3] = image.reshape(H, W * 3)  # (H, W * 3) packed RGB
    msg = raw_message(cls_name, rows.tobytes(), 'rgb8', H, W, step)
    decoded = image_to_numpy(msg)
    np.testing.assert_array_equal(decoded, image)
    assert np.shares_memory(decoded, np.frombuffer(msg.data, np.uint8))


@pytest.mark.parametrize('cls_name', ['rclpy', 'rosbags'])
@pytest.mark.parametrize(('encoding', 'dtype'), [('mono16', '>u2'), ('32FC1', '>f4')])
def test_big_endian_is_decoded_to_native_order(cls_name, encoding, dtype):
    image = canonical(encoding)
    msg = raw_message(
        cls_name,
        image.astype(dtype).tobytes(),
        encoding,
        H,
        W,
        W * np.dtype(dtype).itemsize,
        bigendian=1,
    )
    decoded = image_to_numpy(msg)
    assert decoded.dtype.isnative and decoded.dtype == image.dtype
    np.testing.assert_array_equal(decoded, image)


def test_padded_big_endian_mono16():
    image = canonical('mono16')
    rows = np.zeros((H, W * 2 + 4), np.uint8)
    rows[:, : W * 2] = np.frombuffer(image.astype('>u2').tobytes(), np.uint8).reshape(H, W * 2)
    msg = raw_message('rclpy', rows.tobytes(), 'mono16', H, W, W * 2 + 4, bigendian=1)
    np.testing.assert_array_equal(image_to_numpy(msg), image)


@pytest.mark.parametrize('cls_name', ['rclpy', 'rosbags'])
def test_truncated_data_is_rejected(cls_name):
    msg = raw_message(cls_name, bytes(W * 3 * H - 1), 'rgb8', H, W, W * 3)
    with pytest.raises(ImageConversionError, match='data has 104 bytes, expected .* 105'):
        image_to_numpy(msg)


def test_each_problem_has_its_kind():
    cases = [
        (raw_message('rclpy', bytes(H * W * 2), 'nv21', H, W, W * 2), "'nv21'", 'encoding'),
        (raw_message('rclpy', bytes(H * 13), 'mono16', H, W, 13), 'step 13 is smaller .* 14',
         'step'),
        (raw_message('rclpy', bytes(H * W), 'mono8', H, W, W + 1), 'data has', 'data_length'),
        (raw_message('rclpy', b'', 'mono8', 0, 0, 0), 'empty', 'empty'),
        (raw_message('rosbags', bytes(H * W), 'bayer_rggb8', H, W, W), 'even', 'data_length'),
        (raw_message('rclpy', bytes(H * 5 * 2), 'yuv422', H, 5, 10), 'even width', 'data_length'),
    ]
    for msg, text, kind in cases:
        with pytest.raises(ImageConversionError, match=text) as caught:
            image_to_numpy(msg)
        assert caught.value.kind == kind
    assert isinstance(ImageConversionError('x', 'encoding'), ValueError)


def test_rgb_from_msg_accepts_colour_only():
    image = canonical('rgb8')
    msg = fill_image(RclpyImage(), image, 'bgra8')
    rgb = rgb_from_msg(msg)
    assert rgb.shape == (H, W, 3) and rgb.dtype == np.uint8
    np.testing.assert_array_equal(rgb, image)
    with pytest.raises(ImageConversionError, match="RGB camera .* 'mono8'"):
        rgb_from_msg(fill_image(RclpyImage(), canonical('mono8'), 'mono8'))


@pytest.mark.parametrize('encoding', ['mono8', 'mono16', '8UC1', '16UC1', '32FC1'])
def test_thermal_one_channel_passes_through(encoding):
    image = canonical(encoding)
    np.testing.assert_array_equal(
        thermal_from_msg(fill_image(empty_bag_image(), image, encoding)), image
    )


def test_thermal_grey_in_colour_becomes_one_channel_view():
    grey = canonical('mono8')
    msg = fill_image(RclpyImage(), np.repeat(grey[..., None], 3, axis=2), 'bgr8')
    thermal = thermal_from_msg(msg)
    assert thermal.shape == (H, W) and thermal.dtype == np.uint8
    np.testing.assert_array_equal(thermal, grey)
    assert np.shares_memory(thermal, np.frombuffer(msg.data, np.uint8))


def test_thermal_false_colour_becomes_luma():
    pixels = np.array([[[255, 0, 0], [0, 255, 0], [0, 0, 255], [10, 10, 10]]], np.uint8)
    thermal = thermal_from_msg(fill_image(RclpyImage(), pixels, 'rgb8'))
    np.testing.assert_array_equal(thermal, [[76, 150, 29, 10]])  # BT.601: .299 .587 .114


def test_fill_image_rejects_mismatched_arrays():
    with pytest.raises(ValueError, match="float64 does not match encoding '32FC1'"):
        fill_image(RclpyImage(), np.zeros((H, W)), '32FC1')
    with pytest.raises(ValueError, match=r'needs an \(H, W, 3\)'):
        fill_image(RclpyImage(), np.zeros((H, W), np.uint8), 'rgb8')
    with pytest.raises(ValueError, match=r'needs an \(H, W\) array'):
        fill_image(RclpyImage(), np.zeros((H, W, 3), np.uint16), 'mono16')
    with pytest.raises(ValueError, match="'bayer_rggb8' is decoded only"):
        fill_image(RclpyImage(), np.zeros((H, W), np.uint8), 'bayer_rggb8')


def test_fill_image_accepts_non_contiguous_and_byteswapped_arrays():
    image = canonical('mono16')
    msg = fill_image(RclpyImage(), image.astype('>u2')[:, ::2], 'mono16')
    assert msg.is_bigendian == 0 and msg.step == image[:, ::2].shape[1] * 2
    np.testing.assert_array_equal(image_to_numpy(msg), image[:, ::2])


def test_mask_encoding_reserves_the_top_value():
    assert mask_encoding(1) == mask_encoding(254) == 'mono8'
    assert mask_encoding(255) == mask_encoding(65534) == 'mono16'
    assert MASK_UNLABELED == {'mono8': 255, 'mono16': 65535}
    for bad in (0, 65535):
        with pytest.raises(ValueError, match='num_classes'):
            mask_encoding(bad)


def test_stamp_seconds_reads_either_header():
    rclpy_header = RclpyHeader()
    rclpy_header.stamp.sec, rclpy_header.stamp.nanosec = 12, 500_000_000
    bag_header = BagHeader(stamp=BagTime(sec=12, nanosec=500_000_000), frame_id='')
    assert stamp_seconds(rclpy_header) == stamp_seconds(bag_header) == 12.5


@pytest.fixture(scope='module')
def real_rgb(data_dir) -> np.ndarray:
    """A real MSRS RGB image, (480, 640, 3) uint8."""
    path = sorted((data_dir / 'msrs_mini/train/vi').glob('*.png'))[0]
    return cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def yuv422_bytes(rgb: np.ndarray, order: str) -> bytes:
    """Pack an RGB image as 4:2:2, BT.601 video range (cameras' YUV): 'uyvy' or 'yuyv'."""
    r, g, b = np.moveaxis(rgb.astype(np.float64), -1, 0)  # 3 x (H, W)
    y = 16 + 0.257 * r + 0.504 * g + 0.098 * b
    u = 128 - 0.148 * r - 0.291 * g + 0.439 * b
    v = 128 + 0.439 * r - 0.368 * g - 0.071 * b
    u2, v2 = (u[:, 0::2] + u[:, 1::2]) / 2, (v[:, 0::2] + v[:, 1::2]) / 2  # (H, W / 2)
    planes = {'y0': y[:, 0::2], 'y1': y[:, 1::2], 'u': u2, 'v': v2}
    names = ('u', 'y0', 'v', 'y1') if order == 'uyvy' else ('y0', 'u', 'y1', 'v')
    packed = np.stack([planes[n] for n in names], axis=-1)  # (H, W / 2, 4)
    return np.clip(np.rint(packed), 0, 255).astype(np.uint8).tobytes()


def mosaic(rgb: np.ndarray, pattern: str) -> bytes:
    """Sample an RGB image through a Bayer filter ('rggb' = R at (0, 0), then G, G, B)."""
    out = np.empty(rgb.shape[:2], np.uint8)
    for (dy, dx), colour in zip(((0, 0), (0, 1), (1, 0), (1, 1)), pattern, strict=True):
        out[dy::2, dx::2] = rgb[dy::2, dx::2, 'rgb'.index(colour)]
    return out.tobytes()


def mean_error(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.float64) - b).mean())


@pytest.mark.parametrize(('encoding', 'order'), [('yuv422', 'uyvy'), ('yuv422_yuy2', 'yuyv')])
def test_yuv422_decodes_to_rgb_in_the_right_byte_order(real_rgb, encoding, order):
    h, w = real_rgb.shape[:2]
    msg = raw_message('rclpy', yuv422_bytes(real_rgb, order), encoding, h, w, 2 * w)
    rgb = rgb_from_msg(msg)
    assert rgb.shape == (h, w, 3) and rgb.dtype == np.uint8
    assert mean_error(rgb, real_rgb) < 3  # chroma subsampling and rounding only
    other = 'yuv422_yuy2' if encoding == 'yuv422' else 'yuv422'
    msg.encoding = other
    assert mean_error(rgb_from_msg(msg), real_rgb) > 20  # the other byte order is wrong


@pytest.mark.parametrize('pattern', ['rggb', 'bggr', 'gbrg', 'grbg'])
def test_bayer_mosaics_demosaic_to_rgb(real_rgb, pattern):
    h, w = real_rgb.shape[:2]
    msg = raw_message('rosbags', mosaic(real_rgb, pattern), f'bayer_{pattern}8', h, w, w)
    rgb = rgb_from_msg(msg)
    assert rgb.shape == (h, w, 3)
    assert mean_error(rgb, real_rgb) < 6  # demosaicing error on a real scene
    wrong = {'rggb': 'bggr', 'bggr': 'rggb', 'gbrg': 'grbg', 'grbg': 'gbrg'}[pattern]
    msg.encoding = f'bayer_{wrong}8'
    assert mean_error(rgb_from_msg(msg), real_rgb) > 3 * mean_error(rgb, real_rgb)


def compressed(payload: bytes, fmt: str) -> RclpyCompressedImage:
    msg = RclpyCompressedImage(format=fmt)
    msg.data = payload
    return msg


def test_compressed_rgb_jpeg_and_thermal_png16(real_rgb):
    jpeg = cv2.imencode('.jpg', cv2.cvtColor(real_rgb, cv2.COLOR_RGB2BGR),
                        [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes()
    wire = deserialize_message(serialize_message(
        compressed(jpeg, 'rgb8; jpeg compressed bgr8')), RclpyCompressedImage)
    rgb = rgb_from_compressed(wire)
    assert rgb.shape == real_rgb.shape and mean_error(rgb, real_rgb) < 3
    thermal = (real_rgb[..., 0].astype(np.uint16) * 257)  # (H, W) uint16
    png = cv2.imencode('.png', thermal)[1].tobytes()
    decoded = thermal_from_compressed(compressed(png, 'mono16; png compressed mono16'))
    assert decoded.dtype == np.uint16
    np.testing.assert_array_equal(decoded, thermal)  # png is lossless
    grey = thermal_from_compressed(compressed(jpeg, 'jpeg'))  # colour payload: reduced to grey
    assert grey.shape == thermal.shape and grey.dtype == np.uint8


def test_bad_compressed_images_name_the_problem(real_rgb):
    cases = [
        (rgb_from_compressed, compressed(b'not an image', 'jpeg'), 'does not decode',
         'compressed'),
        (thermal_from_compressed, compressed(bytes(20), '16UC1; compressedDepth png'),
         'compressedDepth', 'encoding'),
        (rgb_from_compressed, compressed(cv2.imencode('.png', real_rgb[..., 0])[1].tobytes(),
                                         'png'), 'expected 8-bit colour', 'channels'),
    ]
    for decode, msg, text, kind in cases:
        with pytest.raises(ImageConversionError, match=text) as caught:
            decode(msg)
        assert caught.value.kind == kind
