"""How SecAgg+ masked vectors travel: as the narrowest unsigned integers that hold them.

Flower's ``secaggplus_mod`` reduces every masked value modulo ``mod_range`` (2³² unless
the workflow says otherwise) and then sends it as an int64 ``.npy`` array: half of each
value's bytes are always zero. This module only changes that serialisation. The client
re-encodes the finished masked arrays (after Flower's masking, which it never touches) to
the narrowest unsigned dtype holding ``[0, mod_range)`` (uint32 for 2³²); the server
widens them back to int64 as they arrive, before Flower's ``SecAggPlusWorkflow`` sums
them, so Flower's modular arithmetic sees exactly the arrays it would have without this.

A value outside ``[0, mod_range)`` is refused with an error naming it; it would mean the
arrays are not what Flower's mod produces, and narrowing must never silently wrap.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from flwr.app import Message
from flwr.common import bytes_to_ndarray, ndarray_to_bytes
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, Key

# Narrowest first; a modulus above 2³² gains nothing over int64 and is left alone.
_NARROW_DTYPES = (np.dtype(np.uint8), np.dtype(np.uint16), np.dtype(np.uint32))
WIDE_DTYPE = np.dtype(np.int64)  # what Flower's mod sends and its workflow sums


def narrow_dtype(mod_range: int) -> np.dtype | None:
    """The narrowest unsigned dtype holding every value in ``[0, mod_range)``, if any."""
    if mod_range < 1:
        raise ValueError(f"SecAgg+ mod_range must be positive, got {mod_range}")
    for dtype in _NARROW_DTYPES:
        if mod_range - 1 <= np.iinfo(dtype).max:
            return dtype
    return None


def narrow(blobs: Sequence[bytes], mod_range: int) -> list[bytes]:
    """Re-encode ``.npy`` masked arrays as :func:`narrow_dtype`; refuse any value that won't fit."""
    dtype = narrow_dtype(mod_range)
    if dtype is None:
        return list(blobs)
    out: list[bytes] = []
    for index, blob in enumerate(blobs):
        array = bytes_to_ndarray(blob)
        if array.dtype.kind not in "iu":
            raise ValueError(
                f"SecAgg+ masked array {index} has dtype {array.dtype}, not integers: "
                "refusing to narrow it"
            )
        if array.size:
            low, high = array.min(), array.max()
            if low < 0 or high >= mod_range:
                bad = low if low < 0 else high
                flat = int(np.argmax(array == bad))
                where = tuple(int(i) for i in np.unravel_index(flat, array.shape))
                raise ValueError(
                    f"SecAgg+ masked value {int(bad)} (array {index}, index {where}) is "
                    f"outside [0, {mod_range}): it cannot be sent as {dtype}"
                )
        out.append(ndarray_to_bytes(array.astype(dtype)))
    return out


def widen(blobs: Sequence[bytes]) -> list[bytes]:
    """The arrays as Flower's mod would have sent them: narrowed ones back to int64.

    Arrays already in any other dtype (a client that does not narrow) pass unchanged.
    """
    out: list[bytes] = []
    for blob in blobs:
        array = bytes_to_ndarray(blob)
        if array.dtype in _NARROW_DTYPES:
            blob = ndarray_to_bytes(array.astype(WIDE_DTYPE))
        out.append(blob)
    return out


def _masked_record(message: Message):  # type: ignore[no-untyped-def]
    if not message.has_content():
        return None
    record = message.content.config_records.get(RECORD_KEY_CONFIGS)
    if record is None or Key.MASKED_PARAMETERS not in record:
        return None
    return record


def narrow_reply(reply: Message, mod_range: int) -> Message:
    """Narrow the masked vectors of a collect-masked-vectors reply in place; others unchanged."""
    record = _masked_record(reply)
    if record is not None:
        record[Key.MASKED_PARAMETERS] = narrow(list(record[Key.MASKED_PARAMETERS]), mod_range)
    return reply


def widen_reply(reply: Message) -> Message:
    """Widen the masked vectors of a reply back to int64 in place; others unchanged."""
    record = _masked_record(reply)
    if record is not None:
        record[Key.MASKED_PARAMETERS] = widen(list(record[Key.MASKED_PARAMETERS]))
    return reply
