"""`univ bag-from-pairs`: an aligned RGB-T dataset as a rosbag2 bag, ground truth included.

Each pair becomes one RGB image (rgb8) and one thermal image (mono8, mono16 for 16-bit
sources), each with a CameraInfo, stamped ``1 / rate`` apart; the thermal stamps trail the RGB
ones by ``--skew-ms`` so that the approximate-time pairing is exercised as with real cameras.
Labelled datasets add ``vision_msgs/Detection2DArray`` ground truth per camera (class NAMES in
``class_id``, score 1) and/or mono8 segmentation masks (255 = ignore), plus a LabelInfo naming
the classes. Topic names: :mod:`univ_ros.replay.topics`. ``--transport png|jpeg`` stores the
camera images as image_transport's ``compressed`` plugin records them instead
(sensor_msgs/CompressedImage on ``<camera>/image_raw/compressed``; mono16 always PNG), as many
vehicle bags hold them; PNG is lossless, so such a bag replays exactly like the raw one.
"""

import argparse
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
from tqdm import tqdm

from univ_ros.compressed import CODECS, compress
from univ_ros.conversions import fill_image
from univ_ros.messages import fill_detections, fill_label_info
from univ_ros.replay import topics as T
from univ_ros.replay.bagio import BagOutput, make_header, msg_type, output_dir
from univ_ros.replay.samples import FORMATS, SampleSource, open_samples

START_NS = 1_700_000_000 * 10**9  # first RGB stamp: fixed, so a dataset always gives one bag
TRANSPORTS = ('raw', *CODECS)


@dataclass
class BagConfig:
    """How pairs are laid out in time and stored."""

    rate: float = 30.0  # pairs per second (camera frame rate)
    skew_ms: float = 3.0  # thermal stamp minus RGB stamp, milliseconds
    storage: str = 'mcap'  # mcap | sqlite3
    compress: bool = False  # zstd (MCAP chunks / sqlite3 messages)
    start_ns: int = START_NS  # stamp of the first RGB image, ns since the epoch
    transport: str = 'raw'  # raw (sensor_msgs/Image) | png | jpeg (CompressedImage)

    def __post_init__(self) -> None:
        if not self.rate > 0:
            raise ValueError(f'--rate must be > 0 pairs per second, got {self.rate}')
        if not abs(self.skew_ms) * 1e-3 < 0.5 / self.rate:
            raise ValueError(f'--skew-ms {self.skew_ms} must be under half a frame '
                             f'({500 / self.rate:.1f} ms at {self.rate} Hz)')
        if self.storage not in ('mcap', 'sqlite3'):
            raise ValueError(f'--storage: expected mcap or sqlite3, got {self.storage!r}')
        if self.transport not in TRANSPORTS:
            raise ValueError(f'--transport: expected one of {TRANSPORTS}, got '
                             f'{self.transport!r}')

    def image_topic(self, raw_topic: str) -> str:
        """Where a camera's images go: ``raw_topic``, or its ``/compressed`` sibling."""
        return raw_topic if self.transport == 'raw' else f'{raw_topic}/compressed'


def camera_info(header: Any, height: int, width: int) -> Any:
    """An uncalibrated sensor_msgs/CameraInfo (K, P all zero, no distortion) of one image."""
    roi = msg_type('sensor_msgs/msg/RegionOfInterest')(x_offset=0, y_offset=0, height=0,
                                                       width=0, do_rectify=False)
    return msg_type(T.CAMERA_INFO)(
        header=header, height=height, width=width, distortion_model='plumb_bob',
        d=np.zeros(5), k=np.zeros(9), r=np.eye(3).reshape(-1), p=np.zeros(12), binning_x=0,
        binning_y=0, roi=roi)


def image_msg(image: np.ndarray, encoding: str, header: Any, transport: str = 'raw') -> Any:
    """A rosbags sensor_msgs/Image of ``image`` (see :func:`univ_ros.conversions.fill_image`).

    ``transport`` png or jpeg: a sensor_msgs/CompressedImage instead.
    """
    if transport != 'raw':
        fmt, payload = compress(image, encoding, transport)
        return msg_type(T.COMPRESSED_IMAGE)(header=header, format=fmt,
                                            data=np.frombuffer(payload, np.uint8))
    empty = msg_type(T.IMAGE)(header=header, height=0, width=0, encoding='', is_bigendian=0,
                              step=0, data=np.zeros(0, np.uint8))
    return fill_image(empty, image, encoding, header)


def detections_msg(boxes: np.ndarray, labels: np.ndarray, class_names: list[str],
                   header: Any) -> Any:
    """Ground-truth Detection2DArray: (K, 4) float32 xyxy pixels, (K,) int64 class ids."""
    truth = SimpleNamespace(boxes=np.asarray(boxes, np.float32).reshape(-1, 4),
                            scores=np.ones(len(labels), np.float32),
                            class_names=[class_names[int(k)] for k in labels])
    empty = msg_type(T.DETECTION_ARRAY)(header=header, detections=[])
    return fill_detections(empty, truth, header, msg_type)


def _declare(bag: BagOutput, source: SampleSource, config: BagConfig) -> None:
    """Add the topics; write each LabelInfo once, at the first stamp."""
    image_type = T.IMAGE if config.transport == 'raw' else T.COMPRESSED_IMAGE
    for topic in (T.RGB_IMAGE, T.THERMAL_IMAGE):
        bag.add_topic(config.image_topic(topic), image_type)
    for topic in (T.RGB_INFO, T.THERMAL_INFO):
        bag.add_topic(topic, T.TYPES[topic])
    start_ns = config.start_ns
    labels = [(source.det_classes, (T.GT_RGB_DETECTIONS, T.GT_THERMAL_DETECTIONS),
               T.GT_DETECTION_LABELS),
              (source.seg_classes, (T.GT_SEGMENTATION,), T.GT_SEGMENTATION_LABELS)]
    for classes, gt_topics, label_topic in labels:
        if classes:
            for topic in (*gt_topics, label_topic):
                bag.add_topic(topic, T.TYPES[topic])
            header = make_header(start_ns, '')
            info = msg_type(T.LABEL_INFO)(header=header, class_map=[], threshold=0.0)
            bag.write(label_topic, start_ns, fill_label_info(info, classes, header, 0.0,
                                                             msg_type))


def write_sample(bag: BagOutput, sample: dict, stamps: tuple[int, int],
                 source: SampleSource, config: BagConfig) -> None:
    """Write one pair (images, camera infos, ground truth) at (RGB, thermal) stamps in ns."""
    rgb_header, thermal_header = make_header(stamps[0], T.RGB_FRAME), \
        make_header(stamps[1], T.THERMAL_FRAME)
    thermal = sample['thermal']
    thermal_encoding = 'mono16' if thermal.dtype == np.uint16 else 'mono8'
    for stamp, header, image, encoding, image_topic, info_topic in (
            (stamps[0], rgb_header, sample['rgb'], 'rgb8', T.RGB_IMAGE, T.RGB_INFO),
            (stamps[1], thermal_header, thermal, thermal_encoding, T.THERMAL_IMAGE,
             T.THERMAL_INFO)):
        bag.write(config.image_topic(image_topic), stamp,
                  image_msg(image, encoding, header, config.transport))
        bag.write(info_topic, stamp, camera_info(header, *image.shape[:2]))
    if source.det_classes:
        bag.write(T.GT_RGB_DETECTIONS, stamps[0], detections_msg(
            sample['boxes_rgb'], sample['labels_rgb'], source.det_classes, rgb_header))
        bag.write(T.GT_THERMAL_DETECTIONS, stamps[1], detections_msg(
            sample['boxes_ir'], sample['labels_ir'], source.det_classes, thermal_header))
    if source.seg_classes and sample.get('mask') is not None:
        bag.write(T.GT_SEGMENTATION, stamps[0], image_msg(sample['mask'], 'mono8', rgb_header))


def write_bag(source: SampleSource, out: Path, config: BagConfig, force: bool = False,
              progress: bool = True) -> dict[str, int]:
    """Write every pair of ``source`` to the rosbag2 directory ``out`` (atomically).

    Returns:
        topic -> messages written.
    """
    period_ns = round(1e9 / config.rate)
    skew_ns = round(config.skew_ms * 1e6)
    with output_dir(out, force) as staging:
        with BagOutput(staging, config.storage, config.compress) as bag:
            _declare(bag, source, config)
            samples: Iterable[dict] = tqdm(source.samples, total=len(source), unit='pair',
                                           desc=f'bag {out.name}', disable=not progress)
            for index, sample in enumerate(samples):
                rgb_ns = config.start_ns + index * period_ns
                write_sample(bag, sample, (rgb_ns, rgb_ns + skew_ns), source, config)
        counts = dict(bag.counts)
    return counts


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """`univ bag-from-pairs` arguments."""
    parser.add_argument('dataset', type=Path, help='dataset root folder')
    parser.add_argument('--format', required=True, choices=FORMATS,
                        help='dataset layout (folder: <root>/{rgb,thermal}/ or vi/ir pairs)')
    parser.add_argument('--out', required=True, type=Path, help='rosbag2 directory to create')
    parser.add_argument('--split', default='train', help='dataset split (default: train)')
    parser.add_argument('--rate', type=float, default=30.0, help='pairs per second (30)')
    parser.add_argument('--skew-ms', type=float, default=3.0,
                        help='thermal stamp minus RGB stamp, ms (3)')
    parser.add_argument('--storage', choices=('mcap', 'sqlite3'), default='mcap')
    parser.add_argument('--compress', action='store_true', help='zstd compression')
    parser.add_argument('--transport', choices=TRANSPORTS, default='raw',
                        help='camera images: raw sensor_msgs/Image (default), or png / jpeg '
                             'CompressedImage on <camera>/image_raw/compressed')
    parser.add_argument('--limit', type=int, default=None, help='first N pairs only')
    parser.add_argument('--force', action='store_true', help='replace an existing --out')


def main(args: argparse.Namespace) -> int:
    """Run `univ bag-from-pairs`."""
    config = BagConfig(args.rate, args.skew_ms, args.storage, args.compress,
                       transport=args.transport)
    source = open_samples(args.dataset, args.format, args.split, args.limit)
    counts = write_bag(source, args.out, config, args.force)
    listing = '\n'.join(f'  {topic}: {count}' for topic, count in counts.items())
    print(f'wrote {args.out} ({config.storage}, {len(source)} pairs at {config.rate:g} Hz, '
          f'thermal +{config.skew_ms:g} ms)\n{listing}', file=sys.stdout)
    return 0
