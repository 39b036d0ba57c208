"""The synchronised (RGB, thermal) image pairs of a bag, decoded: what the node would pair.

Used by ``univ autolabel`` on bags (``univ_core`` asks for it lazily): the same synchroniser and
image conversions as the node and the replay.
"""

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from univ_ros.conversions import ImageConversionError, stamp_seconds
from univ_ros.replay import topics as T
from univ_ros.replay.bagio import BagInput, BagReadError, deserialize, stamp_ns
from univ_ros.sync import ApproximateTimeSync


def iter_bag_pairs(path: Path, rgb_topic: str = T.RGB_IMAGE,
                   thermal_topic: str = T.THERMAL_IMAGE, slop: float | None = None
                   ) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
    """Yield (name = RGB stamp in ns, (H, W, 3) uint8 RGB, (H, W) thermal) per synchronised pair.

    Camera topics may be raw or compressed (sensor_msgs/Image or CompressedImage). ``slop``:
    seconds, or None: auto (half the faster camera's frame period), as the node's default.

    Raises:
        BagReadError: the bag is damaged (after the pairs read before the damage).
        ValueError: a topic is missing (the message lists the bag's topics).
    """
    sync = ApproximateTimeSync(slop)
    streams = {rgb_topic: 'rgb', thermal_topic: 'thermal'}
    with BagInput(Path(path)) as bag:
        bag.require([rgb_topic, thermal_topic])
        decode = bag.pair_decoders(rgb_topic, thermal_topic)
        damage = None
        try:
            for topic, _, raw in bag.messages([rgb_topic, thermal_topic]):
                msg = deserialize(raw, bag.topics[topic].msgtype)
                pair = sync.add(streams[topic], stamp_seconds(msg.header), msg)
                while pair is not None:
                    yield from _decoded(pair, decode)
                    pair = sync.pop_ready()
        except BagReadError as err:
            damage = err
        for pair in sync.finish():  # the end of the bag, or where a damaged one stops
            yield from _decoded(pair, decode)
        if damage is not None:
            raise damage


def _decoded(pair, decode: dict) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
    try:
        rgb, thermal = decode['rgb'](pair.rgb), decode['thermal'](pair.thermal)
    except ImageConversionError:
        return  # the node skips such pairs too
    yield str(stamp_ns(pair.rgb.header)), rgb, thermal
