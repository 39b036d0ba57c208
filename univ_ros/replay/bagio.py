"""rosbag2 reading and writing with ``rosbags`` (no ROS installation needed).

:func:`typestore` is ROS 2 Jazzy's type store plus the nine ``vision_msgs`` definitions shipped
in ``univ_ros/interfaces``, so bags carry the same type names and RIHS01 hashes as bags recorded
with the real ``vision_msgs``. :class:`BagInput` reads a bag (a rosbag2 directory or a bare
``.mcap`` / ``.db3`` file; zstd file, message or chunk compression included) and turns every
failure into an error naming the bag; a truncated MCAP file is read up to the damage (see
:mod:`univ_ros.replay.mcap_salvage`). :class:`BagOutput` writes a rosbag2 directory.
"""

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from rosbags.rosbag2 import Reader, ReaderError, Writer
from rosbags.rosbag2.enums import CompressionFormat, CompressionMode, StoragePlugin
from rosbags.typesys import Stores, get_types_from_msg, get_typestore
from rosbags.typesys.store import Typestore

from univ_ros.compressed import DECODERS
from univ_ros.replay import topics as T
from univ_ros.replay.mcap_salvage import BagReadError, salvage_mcap, salvage_topics

VISION_MSGS_DIR = Path(__file__).resolve().parents[1] / 'interfaces' / 'vision_msgs' / 'msg'
STORAGES = {'mcap': StoragePlugin.MCAP, 'sqlite3': StoragePlugin.SQLITE3}
# zstd as `ros2 bag record` writes it: MCAP chunk compression, sqlite3 per-message compression
COMPRESSION = {'mcap': CompressionMode.STORAGE, 'sqlite3': CompressionMode.MESSAGE}

__all__ = ['BagInput', 'BagOutput', 'BagReadError', 'TopicInfo', 'make_header', 'msg_type',
           'output_dir', 'typestore']


@lru_cache(maxsize=1)
def typestore() -> Typestore:
    """ROS 2 Jazzy types plus ``vision_msgs`` (built once per process)."""
    store = get_typestore(Stores.ROS2_JAZZY)
    types: dict = {}
    for path in sorted(VISION_MSGS_DIR.glob('*.msg')):
        types.update(get_types_from_msg(path.read_text(), f'vision_msgs/msg/{path.stem}'))
    store.register(types)
    return store


def msg_type(type_name: str) -> type:
    """The ``rosbags`` class of ``type_name`` ('pkg/msg/Name'), for :mod:`univ_ros.messages`."""
    return typestore().types[type_name]


def make_header(stamp_ns: int, frame_id: str) -> Any:
    """A rosbags std_msgs/Header stamped ``stamp_ns`` (integer nanoseconds)."""
    time = msg_type('builtin_interfaces/msg/Time')(sec=stamp_ns // 10**9, nanosec=stamp_ns % 10**9)
    return msg_type('std_msgs/msg/Header')(stamp=time, frame_id=frame_id)


def stamp_ns(header: Any) -> int:
    """``header.stamp`` as integer nanoseconds (exact, unlike float seconds)."""
    return int(header.stamp.sec) * 10**9 + int(header.stamp.nanosec)


@dataclass(frozen=True)
class TopicInfo:
    """One topic of a bag."""

    msgtype: str  # 'sensor_msgs/msg/Image'
    count: int  # messages in the bag (from its index)


class BagInput:
    """A bag opened for reading; use as a context manager.

    Args:
        path: a rosbag2 directory (with metadata.yaml) or a bare ``.mcap`` / ``.db3`` file.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: not a readable bag (the message names ``path`` and why).
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise FileNotFoundError(f'bag not found: {self.path}')
        self._reader: Reader | None = None
        self._salvage: Path | None = None  # the MCAP file read record by record
        self.topics: dict[str, TopicInfo] = {}
        self.compression = ''

    def __enter__(self) -> 'BagInput':
        try:
            reader = Reader(self.path)
            reader.open()
        except ReaderError as err:
            self._salvage = self._damaged_mcap(err)
            self.topics = {topic: TopicInfo(kind, count)
                           for topic, (kind, count) in salvage_topics(self._salvage).items()}
            return self
        self._reader = reader
        self.compression = reader.compression_mode or ''
        self.topics = {topic: TopicInfo(info.msgtype or '', info.msgcount)
                       for topic, info in reader.topics.items()}
        return self

    def __exit__(self, *exc: object) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None

    def _damaged_mcap(self, err: ReaderError) -> Path:
        """The MCAP file to salvage after ``err``, or ValueError when there is none."""
        files = [self.path] if self.path.is_file() else sorted(self.path.glob('*.mcap'))
        if len(files) != 1 or files[0].suffix != '.mcap':
            raise ValueError(f'bag {self.path} cannot be read (truncated or corrupt? nothing '
                             f'was read): {err}') from None
        return files[0]

    @property
    def partial(self) -> bool:
        """True when the bag is damaged and read only up to the damage."""
        return self._salvage is not None

    def require(self, cameras: Sequence[str]) -> None:
        """ValueError unless each of the ``cameras`` topics holds camera images.

        Camera images are sensor_msgs/msg/Image or sensor_msgs/msg/CompressedImage messages
        (JPEG / PNG, as image_transport's ``compressed`` plugin records them). It names what is
        missing, empty or of another type and lists the bag's topics.
        """
        listing = ', '.join(f'{t} ({i.msgtype}, {i.count})' for t, i in self.topics.items())
        missing = [t for t in cameras if t not in self.topics]
        if missing:
            raise ValueError(f'bag {self.path} has no topic {", ".join(missing)}; its topics: '
                             f'{listing or "none"}')
        for topic in cameras:
            info = self.topics[topic]
            if info.msgtype not in T.CAMERA_TRANSPORTS or not info.count:
                raise ValueError(
                    f'bag {self.path}: camera topic {topic} holds {info.count} {info.msgtype} '
                    f'messages, expected {" or ".join(T.CAMERA_TRANSPORTS)}; its topics: '
                    f'{listing}')

    def decoder(self, topic: str, camera: str) -> Callable[[Any], Any]:
        """The node's decoder of ``camera`` ('rgb' | 'thermal') images for ``topic``'s type."""
        return DECODERS[camera, T.CAMERA_TRANSPORTS[self.topics[topic].msgtype]]

    def pair_decoders(self, rgb_topic: str, thermal_topic: str) -> dict[str, Callable]:
        """{'rgb': decoder, 'thermal': decoder} of the two camera topics (:meth:`decoder`)."""
        return {'rgb': self.decoder(rgb_topic, 'rgb'),
                'thermal': self.decoder(thermal_topic, 'thermal')}

    def messages(self, topics: Sequence[str]) -> Iterator[tuple[str, int, bytes]]:
        """(topic, bag timestamp ns, raw CDR) of ``topics`` in timestamp order.

        Raises:
            BagReadError: the bag is truncated or corrupt; it tells how far reading got.
        """
        if self._salvage is not None:
            yield from salvage_mcap(self._salvage, set(topics))
            return
        assert self._reader is not None, 'BagInput: use it as a context manager'
        connections = [c for c in self._reader.connections if c.topic in set(topics)]
        count, last = 0, None
        try:
            for connection, timestamp, raw in self._reader.messages(connections):
                yield connection.topic, timestamp, raw
                count, last = count + 1, timestamp
        except (ReaderError, OSError, ValueError, KeyError) as err:
            raise BagReadError(self.path, count, last, str(err)) from err
        except Exception as err:  # apsw / zstd errors of a damaged file
            raise BagReadError(self.path, count, last, f'{type(err).__name__}: {err}') from err


class BagOutput:
    """A new rosbag2 directory written message by message; use as a context manager.

    Args:
        path: the directory to create (must not exist); its storage file is named after it.
        storage: 'mcap' or 'sqlite3'.
        compress: zstd (MCAP chunks, sqlite3 messages).
    """

    def __init__(self, path: Path, storage: str = 'mcap', compress: bool = False) -> None:
        if storage not in STORAGES:
            raise ValueError(f'storage: expected one of {tuple(STORAGES)}, got {storage!r}')
        self.path = Path(path)
        self._writer = Writer(self.path, version=9, storage_plugin=STORAGES[storage])
        if compress:
            self._writer.set_compression(COMPRESSION[storage], CompressionFormat.ZSTD)
        self._connections: dict[str, Any] = {}
        self.counts: dict[str, int] = {}

    def __enter__(self) -> 'BagOutput':
        self._writer.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self._writer.close()

    def add_topic(self, topic: str, msgtype: str) -> None:
        """Declare ``topic`` (once; later calls are ignored)."""
        if topic not in self._connections:
            self._connections[topic] = self._writer.add_connection(topic, msgtype,
                                                                   typestore=typestore())
            self.counts[topic] = 0

    def write_raw(self, topic: str, timestamp_ns: int, raw: bytes | memoryview) -> None:
        """Write already serialised CDR on a declared topic."""
        self._writer.write(self._connections[topic], timestamp_ns, raw)
        self.counts[topic] += 1

    def write(self, topic: str, timestamp_ns: int, msg: Any) -> None:
        """Serialise ``msg`` (a rosbags message of the topic's type) and write it."""
        raw = typestore().serialize_cdr(msg, self._connections[topic].msgtype)
        self.write_raw(topic, timestamp_ns, raw)


def deserialize(raw: bytes | memoryview, msgtype: str) -> Any:
    """Raw CDR -> rosbags message of ``msgtype``."""
    return typestore().deserialize_cdr(raw, msgtype)


@contextmanager
def output_dir(path: Path, force: bool = False) -> Iterator[Path]:
    """Build an output (file or directory) beside ``path`` and move it into place at the end.

    Readers never see a half-written ``path``; an existing ``path`` is refused unless ``force``,
    and is replaced only once the new one is complete. On an exception nothing is left behind.

    Yields:
        ``staging``: a path named like ``path`` (same base name, so a rosbag2 directory names
        its storage file right) that does not exist yet; create it, then leave the block.
    """
    path = Path(path)
    if path.exists() and not force:
        raise ValueError(f'output {path} exists; pass --force to replace it')
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f'.{path.name}.', suffix='.tmp', dir=path.parent))
    staging = tmp / path.name
    try:
        yield staging
        if not staging.exists():
            raise RuntimeError(f'output_dir: nothing was written to {staging}')
        if path.exists():
            os.replace(path, tmp / f'{path.name}.old')
        os.replace(staging, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
