"""G.711 tables: bit-exact against the reference coder, and the properties of the laws."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from tonebridge.media import g711

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    try:
        import audioop
    except ImportError:  # gone in Python 3.13
        audioop = None

needs_audioop = pytest.mark.skipif(audioop is None, reason="stdlib audioop is not available")

ALL_SAMPLES = np.arange(-32768, 32768, dtype=np.int16)
ALL_CODES = np.arange(256, dtype=np.uint8)


@needs_audioop
@pytest.mark.parametrize("law", ["ulaw", "alaw"])
def test_encode_matches_reference_for_every_sample(law: str) -> None:
    reference = getattr(audioop, f"lin2{law}")(ALL_SAMPLES.astype("<i2").tobytes(), 2)
    ours = getattr(g711, f"{law}_encode")(ALL_SAMPLES)
    mismatches = np.nonzero(ours != np.frombuffer(reference, dtype=np.uint8))[0]
    assert mismatches.size == 0, f"first mismatch at sample {ALL_SAMPLES[mismatches[0]]}"


@needs_audioop
@pytest.mark.parametrize("law", ["ulaw", "alaw"])
def test_decode_matches_reference_for_every_code(law: str) -> None:
    reference = np.frombuffer(getattr(audioop, f"{law}2lin")(ALL_CODES.tobytes(), 2), dtype="<i2")
    np.testing.assert_array_equal(getattr(g711, f"{law}_decode")(ALL_CODES), reference)


def test_known_values() -> None:
    # G.711: silence is 0xFF in mu-law and 0xD5 in A-law; the extremes decode to the ends of the tables.
    zero = np.zeros(1, dtype=np.int16)
    assert g711.ulaw_encode(zero)[0] == 0xFF
    assert g711.alaw_encode(zero)[0] == 0xD5
    assert g711.ulaw_decode(bytes([0x00, 0x80, 0xFF, 0x7F])).tolist() == [-32124, 32124, 0, 0]
    assert g711.alaw_decode(bytes([0x55, 0xD5, 0x2A, 0xAA])).tolist() == [-8, 8, -32256, 32256]


def test_codes_survive_decode_then_encode() -> None:
    np.testing.assert_array_equal(g711.alaw_encode(g711.alaw_decode(ALL_CODES)), ALL_CODES)
    # mu-law has two zeros (0x7F and 0xFF); only the positive one comes back.
    back = g711.ulaw_encode(g711.ulaw_decode(ALL_CODES))
    expected = ALL_CODES.copy()
    expected[0x7F] = 0xFF
    np.testing.assert_array_equal(back, expected)


@pytest.mark.parametrize("law", ["ulaw", "alaw"])
def test_quantisation_is_monotonic_and_close(law: str) -> None:
    encode, decode = getattr(g711, f"{law}_encode"), getattr(g711, f"{law}_decode")
    out = decode(encode(ALL_SAMPLES)).astype(np.int32)
    assert np.all(np.diff(out) >= 0)
    x = ALL_SAMPLES.astype(np.int32)
    inside = np.abs(x) < 32000  # below the overload point
    # Logarithmic companding: error within half a step, a step being ~1/16 of the segment's base.
    assert np.all(np.abs(out - x)[inside] <= np.abs(x)[inside] / 16 + 16)


def test_encode_and_decode_by_codec_name() -> None:
    samples = (np.sin(np.arange(160) / 5) * 8000).astype(np.int16)
    for codec, encode in (("PCMU", g711.ulaw_encode), ("PCMA", g711.alaw_encode)):
        payload = g711.encode(codec, samples)
        assert isinstance(payload, bytes) and len(payload) == 160
        assert payload == encode(samples).tobytes()
        decoded = g711.decode(codec, payload)
        assert decoded.dtype == np.int16 and decoded.shape == (160,)
        assert np.max(np.abs(decoded.astype(int) - samples)) < 300
    assert g711.PAYLOAD_TYPES == {"PCMU": 0, "PCMA": 8}


def test_misuse_is_reported() -> None:
    with pytest.raises(ValueError, match="G722"):
        g711.encode("G722", np.zeros(4, dtype=np.int16))
    with pytest.raises(ValueError, match="unknown"):
        g711.decode("opus", b"\x00")
    with pytest.raises(TypeError, match="int16"):
        g711.ulaw_encode(np.zeros(4, dtype=np.float32))
    with pytest.raises(TypeError, match="uint8"):
        g711.alaw_decode(np.zeros(4, dtype=np.int16))


def test_shapes_are_kept() -> None:
    block = np.zeros((3, 160), dtype=np.int16)
    assert g711.ulaw_encode(block).shape == (3, 160)
    assert g711.alaw_decode(np.zeros((2, 80), dtype=np.uint8)).shape == (2, 80)
