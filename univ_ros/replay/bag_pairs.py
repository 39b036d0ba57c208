"""The synchronised (RGB, thermal) image pairs of a bag, decoded: what the node would pair.

Used by ``univ autolabel`` on bags (``univ_core`` asks for it lazily): the same synchroniser and
image conversions as the node and the replay.
"""

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from univ_ros.conversions import (
    ImageConversionError,
    rgb_from_msg,
    stamp_seconds,
    thermal_from_msg,
)
from univ_ros.replay import topics as T
from univ_ros.replay.bagio import BagInput, deserialize, stamp_ns
from univ_ros.sync import DEFAULT_SLOP, ApproximateTimeSync


def iter_bag_pairs(path: Path, rgb_topic: str = T.RGB_IMAGE,
                   thermal_topic: str = T.THERMAL_IMAGE, slop: float = DEFAULT_SLOP
                   ) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
    """Yield (name = RGB stamp in ns, (H, W, 3) uint8 RGB, (H, W) thermal) per synchronised pair.

    Raises:
        BagReadError: the bag is damaged (after the pairs read before the damage).
        ValueError: a topic is missing (the message lists the bag's topics).
    """
    sync = ApproximateTimeSync(slop)
    streams = {rgb_topic: 'rgb', thermal_topic: 'thermal'}
    with BagInput(Path(path)) as bag:
        bag.require([rgb_topic, thermal_topic])
        for topic, _, raw in bag.messages([rgb_topic, thermal_topic]):
            msg = deserialize(raw, bag.topics[topic].msgtype)
            pair = sync.add(streams[topic], stamp_seconds(msg.header), msg)
            if pair is None:
                continue
            try:
                rgb, thermal = rgb_from_msg(pair.rgb), thermal_from_msg(pair.thermal)
            except ImageConversionError:
                continue  # the node skips such pairs too
            yield str(stamp_ns(pair.rgb.header)), rgb, thermal
