"""Read a truncated or damaged MCAP file record by record, up to the damage.

``rosbags`` needs an MCAP file's footer and index, which a recording cut short (a crash, a full
disk, a partial copy) lacks. The MCAP format (https://mcap.dev/spec) is a sequence of records
``opcode (u8) | length (u64) | content``, messages sitting in (optionally compressed) chunks, so
every complete message before the damage can still be read.
"""

import mmap
import struct
from collections.abc import Iterator
from pathlib import Path

from rosbags.rosbag2.storage_mcap import decompress

MAGIC = b'\x89MCAP0\r\n'
OP_SCHEMA, OP_CHANNEL, OP_MESSAGE, OP_CHUNK, OP_DATA_END, OP_FOOTER = 0x03, 0x04, 0x05, 0x06, \
    0x0F, 0x02


class BagReadError(ValueError):
    """A bag that is truncated or corrupt; tells how far reading got.

    Attributes:
        path: the bag.
        messages_read: messages read before the damage.
        last_stamp_ns: bag timestamp of the last message read (None: none read).
        detail: what was wrong.
    """

    def __init__(self, path: Path, messages_read: int, last_stamp_ns: int | None,
                 detail: str) -> None:
        self.path, self.messages_read, self.last_stamp_ns = Path(path), messages_read, \
            last_stamp_ns
        self.detail = detail
        where = ('before the first message' if last_stamp_ns is None else
                 f'after {messages_read} messages (last bag time {last_stamp_ns * 1e-9:.3f} s)')
        super().__init__(f'bag {path} is truncated or corrupt: reading stopped {where}: {detail}')


class _Damage(Exception):
    """Where and why record parsing stopped."""


# what stops reading: a cut or invalid record, or record contents that do not parse
DAMAGE = (_Damage, struct.error, UnicodeDecodeError)


def _string(buf: bytes, at: int) -> tuple[str, int]:
    """MCAP string (u32 length + UTF-8) at ``at`` -> (text, next offset)."""
    (size,) = struct.unpack_from('<I', buf, at)
    return buf[at + 4: at + 4 + size].decode(), at + 4 + size


def _records(data: bytes | mmap.mmap, start: int,
             nested: bool = False) -> Iterator[tuple[int, bytes]]:
    """(opcode, content) of each complete record from ``start``; chunks are opened in place."""
    at = start
    while at < len(data):
        if at + 9 > len(data):
            raise _Damage(f'record header cut at byte {at}')
        op, size = struct.unpack_from('<BQ', data, at)
        if op == 0:  # reserved in MCAP: a zero-filled tail (a crash, a power loss)
            raise _Damage(f'invalid record (opcode 0x00) at byte {at}')
        if at + 9 + size > len(data):
            raise _Damage(f'record (opcode 0x{op:02x}, {size} bytes) cut at byte {at}')
        content = data[at + 9: at + 9 + size]
        at += 9 + size
        if op == OP_CHUNK:
            yield from _records(_chunk_records(content), 0, nested=True)
        elif op in (OP_DATA_END, OP_FOOTER) and not nested:
            return
        else:
            yield op, content


def _chunk_records(content: bytes) -> bytes:
    """The decompressed records of a chunk record's content."""
    _, _, size, crc = struct.unpack_from('<QQQI', content, 0)
    compression, at = _string(content, 28)
    (length,) = struct.unpack_from('<Q', content, at)
    try:
        return decompress(content[at + 8: at + 8 + length], compression, size, crc)
    except Exception as err:  # noqa: BLE001 - any decoder error means a damaged chunk
        raise _Damage(f'chunk does not decompress ({err})') from err


def _walk(path: Path) -> Iterator[tuple[int, bytes]]:
    """Every complete record of the file (memory-mapped: large bags are not loaded)."""
    with open(path, 'rb') as file:
        if file.read(len(MAGIC)) != MAGIC:
            raise _Damage('not an MCAP file (bad magic)')
        with mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as data:
            yield from _records(data, len(MAGIC))


def _channels(op: int, content: bytes, schemas: dict, channels: dict) -> None:
    """Record a schema (id -> type name) or a channel (id -> (topic, type name))."""
    (key,) = struct.unpack_from('<H', content, 0)
    if op == OP_SCHEMA:
        schemas[key] = _string(content, 2)[0]
    elif op == OP_CHANNEL:
        (schema_id,) = struct.unpack_from('<H', content, 2)
        channels[key] = (_string(content, 4)[0], schemas.get(schema_id, ''))


def salvage_topics(path: Path) -> dict[str, tuple[str, int]]:
    """Topic -> (type name, complete messages) of a damaged MCAP file."""
    schemas: dict[int, str] = {}
    channels: dict[int, tuple[str, str]] = {}
    counts: dict[int, int] = {}
    try:
        for op, content in _walk(path):
            if op == OP_MESSAGE:
                (key,) = struct.unpack_from('<H', content, 0)
                counts[key] = counts.get(key, 0) + 1
            else:
                _channels(op, content, schemas, channels)
    except DAMAGE:
        pass
    return {topic: (kind, counts.get(key, 0)) for key, (topic, kind) in channels.items()}


def salvage_mcap(path: Path, topics: set[str]) -> Iterator[tuple[str, int, bytes]]:
    """(topic, log time ns, raw CDR) of ``topics`` in file order, up to the damage.

    Raises:
        BagReadError: always at the end when the file is damaged (after the last good message).
    """
    schemas: dict[int, str] = {}
    channels: dict[int, tuple[str, str]] = {}
    count, last = 0, None
    try:
        for op, content in _walk(path):
            if op != OP_MESSAGE:
                _channels(op, content, schemas, channels)
                continue
            key, _, log_time, _ = struct.unpack_from('<HIQQ', content, 0)
            topic = channels.get(key, ('', ''))[0]
            count, last = count + 1, log_time
            if topic in topics:
                yield topic, log_time, content[22:]
    except DAMAGE as damage:
        raise BagReadError(path, count, last, str(damage) or repr(damage)) from None
    raise BagReadError(path, count, last, 'the file has no valid MCAP footer/index')
