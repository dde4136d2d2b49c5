"""Send a message's arrays as one packed array, and restore them exactly on arrival.

flwr 1.41 moves a message as a tree of objects, one per record and one (plus its chunk)
per array, each fetched with its own request at every hop: ServerApp → SuperLink →
SuperNode → ClientApp. An adapter is ~26 arrays, so a training message was ~60 objects
and ~180 requests, which on a deployment cost more time than the bytes did. Packing each
ArrayRecord of a server→client message into a single array (and its layout into a
ConfigRecord beside it) makes that a handful.

It is transport only: :func:`unpack` gives back byte-for-byte the same Arrays (names,
order, dtypes, shapes, storage types), so nothing after it can tell. The server packs in
its grid (server/traffic.py), the client unpacks in its outermost mod (client/app.py),
before SecAgg+ or the client code see the message. Only server→client messages are
packed: what a node sends stays as its audit log describes it.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, RecordDict

PACKED = "packed"  # the one array of a packed ArrayRecord
LAYOUT = ".packing"  # suffix of the ConfigRecord holding a packed record's layout
_FIELDS = ("names", "dtypes", "stypes", "ndims", "dims", "sizes")


def pack(content: RecordDict) -> RecordDict:
    """``content`` with every ArrayRecord of two or more arrays packed into one array."""
    out = RecordDict()
    for name, record in content.items():
        if isinstance(record, ArrayRecord) and len(record) > 1:
            arrays = list(record.items())
            blob = b"".join(array.data for _, array in arrays)
            out[name] = ArrayRecord({PACKED: Array(np.frombuffer(blob, dtype=np.uint8))})
            out[name + LAYOUT] = ConfigRecord(
                {
                    "names": [key for key, _ in arrays],
                    "dtypes": [a.dtype for _, a in arrays],
                    "stypes": [a.stype for _, a in arrays],
                    "ndims": [len(a.shape) for _, a in arrays],
                    "dims": [int(d) for _, a in arrays for d in a.shape],
                    "sizes": [len(a.data) for _, a in arrays],
                }
            )
        else:
            out[name] = record
    return out


def unpack(content: RecordDict) -> RecordDict:
    """The inverse of :func:`pack`; a message that was not packed comes back as it was.

    Raises ``ValueError`` naming the record if a layout does not match its packed bytes.
    """
    layouts = {n[: -len(LAYOUT)] for n in content if n.endswith(LAYOUT)}
    out = RecordDict()
    for name, record in content.items():
        if name.endswith(LAYOUT) and name[: -len(LAYOUT)] in content:
            continue
        if name in layouts:
            layout = content[name + LAYOUT]
            out[name] = _unpack_record(name, record, layout)  # type: ignore[arg-type]
        else:
            out[name] = record
    return out


def _unpack_record(name: str, record: ArrayRecord, layout: ConfigRecord) -> ArrayRecord:
    try:
        names, dtypes, stypes, ndims, dims, sizes = (list(layout[f]) for f in _FIELDS)  # type: ignore[arg-type]
        blob = record[PACKED].numpy().tobytes()
    except (KeyError, TypeError) as exc:
        raise ValueError(f"packed record {name!r}: missing {exc}") from exc
    if not len(names) == len(dtypes) == len(stypes) == len(ndims) == len(sizes):
        raise ValueError(f"packed record {name!r}: layout lists differ in length")
    if sum(ndims) != len(dims) or sum(sizes) != len(blob):
        raise ValueError(
            f"packed record {name!r}: layout says {sum(sizes)} bytes in {sum(ndims)} dims, "
            f"got {len(blob)} bytes and {len(dims)} dims"
        )
    arrays, offset, dim = {}, 0, 0
    for key, dtype, stype, ndim, size in zip(names, dtypes, stypes, ndims, sizes, strict=True):
        shape = tuple(int(d) for d in dims[dim : dim + ndim])
        data = blob[offset : offset + size]
        arrays[str(key)] = Array(dtype=str(dtype), shape=shape, stype=str(stype), data=data)
        offset, dim = offset + size, dim + ndim
    return ArrayRecord(arrays)


def unpack_mod(message: Message, context: Context, call_next: Callable) -> Message:
    """Client mod (outermost): restore packed arrays before anything else reads them."""
    if message.has_content():
        message.content = unpack(message.content)
    return call_next(message, context)
