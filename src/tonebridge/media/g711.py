"""G.711 mu-law and A-law coding of 16-bit linear PCM (ITU-T G.711), vectorised with numpy lookup tables.

The tables are built once at import from the segment/step structure of G.711 §2 (Tables 1a/1b for A-law,
2a/2b for mu-law): eight segments per sign, sixteen steps per segment, each segment's step twice the previous
one's. Encoding indexes a 65536-entry table by the int16 sample; decoding indexes a 256-entry table by the
code. Both match the ITU reference coder bit for bit (checked against the stdlib `audioop` in the tests).
"""

from __future__ import annotations

from typing import Literal

import numpy as np

# The one codec table: every module that names a G.711 codec or its payload type takes it from here.
Codec = Literal["PCMU", "PCMA"]
CODECS: tuple[Codec, ...] = ("PCMU", "PCMA")
PAYLOAD_TYPES: dict[str, int] = {"PCMU": 0, "PCMA": 8}  # RFC 3551 §6, Table 4
CODEC_OF_PAYLOAD_TYPE: dict[int, Codec] = {0: "PCMU", 8: "PCMA"}


def _ulaw_decode_table() -> np.ndarray:
    # G.711 Table 2a: with the code's bits inverted, segment s (3 bits) and step q (4 bits) decode to the
    # magnitude ((2q + 33) << s) - 33 on the 14-bit scale; the 16-bit value is 4 times that.
    codes = np.arange(256, dtype=np.int32)
    inverted = ~codes & 0xFF
    seg = (inverted >> 4) & 0x07
    step = inverted & 0x0F
    magnitude = (((2 * step + 33) << seg) - 33) * 4
    return np.where(inverted & 0x80, -magnitude, magnitude).astype(np.int16)


def _alaw_decode_table() -> np.ndarray:
    # G.711 Table 1a: even bits are inverted on the line (XOR 0x55). Segment 0 holds steps of 2 from 1,
    # segment s >= 1 steps of 2^s from 2^(s+4) + 2^(s-1) on the 13-bit scale; the 16-bit value is 8 times that.
    codes = np.arange(256, dtype=np.int32)
    a = codes ^ 0x55
    seg = (a >> 4) & 0x07
    step = a & 0x0F
    magnitude = np.where(seg == 0, 2 * step + 1, (2 * step + 33) << np.maximum(seg - 1, 0)) * 8
    # The sign bit set means a positive value in A-law (the opposite of mu-law).
    return np.where(a & 0x80, magnitude, -magnitude).astype(np.int16)


def _segment(magnitude: np.ndarray, first_top: int) -> np.ndarray:
    """The segment (0-7, 8 when beyond the last) holding each magnitude; segment s ends below first_top << s."""
    tops = (first_top << np.arange(8, dtype=np.int32)) - 1
    return np.searchsorted(tops, magnitude, side="left").astype(np.int32)


def _ulaw_encode_table() -> np.ndarray:
    x = np.arange(-32768, 32768, dtype=np.int32) >> 2  # the 14-bit coder input (G.711 §3.2)
    negative = x < 0
    # The reference coder takes the magnitude of the 14-bit value and adds the bias of 33 that makes the
    # segment edges powers of two (Table 2a decision values offset by 33). Magnitudes beyond the last
    # decision value (8158) saturate to the largest code.
    magnitude = np.minimum(np.abs(x), 8159) + 33
    seg = _segment(magnitude, 0x40)  # segment s covers biased magnitudes below 64 << s
    step = (magnitude >> (seg + 1)) & 0x0F
    code = (seg << 4) | step
    code = np.where(seg >= 8, 0x7F, code)
    # Codes are sent with all bits inverted; the sign bit is 1 for positive values after inversion.
    code = np.where(negative, code ^ 0x7F, code ^ 0xFF)
    return code.astype(np.uint8)


def _alaw_encode_table() -> np.ndarray:
    x = np.arange(-32768, 32768, dtype=np.int32) >> 3  # the 13-bit coder input (G.711 §3.1)
    negative = x < 0
    # Negative values are coded by their one's complement, so -1 and 0 fall in the same step (Table 1a).
    magnitude = np.where(negative, -x - 1, x)
    seg = _segment(magnitude, 0x20)  # segment s covers magnitudes below 32 << s
    step = np.where(seg < 2, magnitude >> 1, magnitude >> np.maximum(seg, 1)) & 0x0F
    code = (seg << 4) | step
    code = np.where(seg >= 8, 0x7F, code)
    # The sign bit is 1 for positive values; even bits are inverted on the line (XOR 0x55).
    code = np.where(negative, code ^ 0x55, code ^ 0xD5)
    return code.astype(np.uint8)


_ULAW_DECODE = _ulaw_decode_table()
_ALAW_DECODE = _alaw_decode_table()
_ULAW_ENCODE = _ulaw_encode_table()
_ALAW_ENCODE = _alaw_encode_table()
for _table in (_ULAW_DECODE, _ALAW_DECODE, _ULAW_ENCODE, _ALAW_ENCODE):
    _table.flags.writeable = False


def _as_index(samples: np.ndarray) -> np.ndarray:
    """int16 samples as indexes into a 65536-entry encode table (the value offset by 32768)."""
    pcm = np.asarray(samples)
    if pcm.dtype != np.int16:
        raise TypeError(f"G.711 encodes int16 samples, got {pcm.dtype}")
    return pcm.view(np.uint16) ^ 0x8000


def _as_codes(codes: np.ndarray | bytes | bytearray | memoryview) -> np.ndarray:
    if isinstance(codes, bytes | bytearray | memoryview):
        return np.frombuffer(codes, dtype=np.uint8)
    array = np.asarray(codes)
    if array.dtype != np.uint8:
        raise TypeError(f"G.711 decodes uint8 codes or bytes, got {array.dtype}")
    return array


def ulaw_encode(samples: np.ndarray) -> np.ndarray:
    """Encode int16 samples to mu-law codes (uint8, same shape)."""
    return _ULAW_ENCODE[_as_index(samples)]


def ulaw_decode(codes: np.ndarray | bytes) -> np.ndarray:
    """Decode mu-law codes (uint8 array or bytes) to int16 samples."""
    return _ULAW_DECODE[_as_codes(codes)]


def alaw_encode(samples: np.ndarray) -> np.ndarray:
    """Encode int16 samples to A-law codes (uint8, same shape)."""
    return _ALAW_ENCODE[_as_index(samples)]


def alaw_decode(codes: np.ndarray | bytes) -> np.ndarray:
    """Decode A-law codes (uint8 array or bytes) to int16 samples."""
    return _ALAW_DECODE[_as_codes(codes)]


def encode(codec: str, samples: np.ndarray) -> bytes:
    """Encode int16 samples as an RTP payload of `codec` ("PCMU" or "PCMA")."""
    if codec == "PCMU":
        return ulaw_encode(samples).tobytes()
    if codec == "PCMA":
        return alaw_encode(samples).tobytes()
    raise ValueError(f"unknown G.711 codec {codec!r}: expected 'PCMU' or 'PCMA'")


def decode(codec: str, payload: bytes) -> np.ndarray:
    """Decode an RTP payload of `codec` ("PCMU" or "PCMA") to int16 samples."""
    if codec == "PCMU":
        return ulaw_decode(payload)
    if codec == "PCMA":
        return alaw_decode(payload)
    raise ValueError(f"unknown G.711 codec {codec!r}: expected 'PCMU' or 'PCMA'")
