"""The in-band DTMF detector against ITU-T Q.24, on signals generated here (one test per row, at its boundary)."""

from __future__ import annotations

import dataclasses
import zlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tonebridge.media.dtmf import (
    COL_FREQS,
    DIGITS,
    KEYPAD,
    ROW_FREQS,
    DtmfDetector,
    DtmfDetectorBank,
    DtmfParams,
    ToneEvent,
    digit_freqs,
)

FS = 8000
ALL = "123A456B789C*0#D"
# ITU-T Q.23, written out again here so that a slip in the module's table cannot hide.
Q23_LOW = {"1": 697, "2": 697, "3": 697, "A": 697, "4": 770, "5": 770, "6": 770, "B": 770,
           "7": 852, "8": 852, "9": 852, "C": 852, "*": 941, "0": 941, "#": 941, "D": 941}  # fmt: skip
Q23_HIGH = {"1": 1209, "4": 1209, "7": 1209, "*": 1209, "2": 1336, "5": 1336, "8": 1336, "0": 1336,
            "3": 1477, "6": 1477, "9": 1477, "#": 1477, "A": 1633, "B": 1633, "C": 1633, "D": 1633}  # fmt: skip


# -- signal generation ------------------------------------------------------------------------------------


def peak(level_dbm0: float) -> float:
    """Peak of a sine at `level_dbm0` (G.711: a full-scale sine is +3.14 dBm0)."""
    return 32767.0 * 10.0 ** ((level_dbm0 - 3.14) / 20.0)


def ms(n: float) -> int:
    return int(round(n * FS / 1000))


def burst(
    digit: str,
    dur_ms: float,
    rng: np.random.Generator,
    level: float = -10.0,
    twist: float = 0.0,
    dev_low: float = 0.0,
    dev_high: float = 0.0,
    gap_ms: float = 0.0,
) -> np.ndarray:
    """One key press: `level` is the low tone's dBm0, `twist` the high tone's level minus the low one's,
    `dev_*` relative frequency offsets, `gap_ms` a silent interruption in the middle (phase kept)."""
    t = np.arange(ms(dur_ms)) / FS
    low, high = Q23_LOW[digit] * (1 + dev_low), Q23_HIGH[digit] * (1 + dev_high)
    x = peak(level) * np.sin(2 * np.pi * low * t + rng.uniform(0, 2 * np.pi))
    x += peak(level + twist) * np.sin(2 * np.pi * high * t + rng.uniform(0, 2 * np.pi))
    if gap_ms:
        g0 = (len(x) - ms(gap_ms)) // 2
        x[g0 : g0 + ms(gap_ms)] = 0.0
    return x


def silence(dur_ms: float) -> np.ndarray:
    return np.zeros(ms(dur_ms))


def keyed(
    digits: str,
    rng: np.random.Generator,
    on_ms: float = 50.0,
    off_ms: float = 100.0,
    jitter_ms: float = 5.0,
    **kw,
) -> np.ndarray:
    """A keyed string; each pause gets 0..jitter_ms extra so tone edges fall anywhere on the detector's grid."""
    parts = [silence(60 + rng.uniform(0, 5))]
    for d in digits:
        parts += [burst(d, on_ms, rng, **kw), silence(off_ms + rng.uniform(0, jitter_ms))]
    return np.concatenate(parts + [silence(100)])


def noise(n: int, level_dbm0: float, rng: np.random.Generator) -> np.ndarray:
    """White Gaussian noise of total power `level_dbm0` over 0-4 kHz."""
    return rng.standard_normal(n) * peak(level_dbm0) / np.sqrt(2)


def pcm(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x), -32768, 32767).astype(np.int16)


def mulaw(x: np.ndarray) -> np.ndarray:
    """A G.711-like round trip: clip, mu-law compress (mu = 255), quantise to 8 bits, expand."""
    v = np.clip(x / 32768.0, -1.0, 1.0)
    c = np.sign(v) * np.log1p(255.0 * np.abs(v)) / np.log1p(255.0)
    c = np.round(c * 127.0) / 127.0
    return pcm(np.sign(c) * np.expm1(np.abs(c) * np.log1p(255.0)) / 255.0 * 32768.0)


def events(x: np.ndarray, frame: int = 160, params: DtmfParams | None = None) -> list[ToneEvent]:
    det = DtmfDetector(params)
    x = pcm(x) if x.dtype != np.int16 else x
    out: list[ToneEvent] = []
    for i in range(0, len(x), frame):
        out += det.feed_events(x[i : i + frame])
    return out + det.flush_events()


def detect(x: np.ndarray) -> str:
    """Digits as the bench sees them: feed() on 20 ms frames, then flush()."""
    det = DtmfDetector()
    x = pcm(x)
    return "".join(det.feed(x[i : i + 160]) for i in range(0, len(x), 160)) + det.flush()


@pytest.fixture
def rng(request: pytest.FixtureRequest) -> np.random.Generator:
    # A seed per test (not one shared by all), so verdicts cannot lean on one set of phases; stable across runs.
    return np.random.default_rng(zlib.crc32(request.node.name.encode()))


# -- Q.23 tables and the public types -----------------------------------------------------------------------


def test_q23_tables() -> None:
    assert DIGITS == ALL
    assert ROW_FREQS == (697.0, 770.0, 852.0, 941.0)
    assert COL_FREQS == (1209.0, 1336.0, 1477.0, 1633.0)
    assert "".join("".join(r) for r in KEYPAD) == ALL
    for d in ALL:
        assert digit_freqs(d) == (Q23_LOW[d], Q23_HIGH[d])
    assert digit_freqs("a") == digit_freqs("A")


def test_tone_event_is_frozen() -> None:
    ev = ToneEvent("5", 10, 400)
    with pytest.raises(dataclasses.FrozenInstanceError):
        ev.digit = "6"  # type: ignore[misc]


def test_decodes_every_key(rng: np.random.Generator) -> None:
    assert detect(keyed(ALL * 2, rng, on_ms=50, off_ms=50)) == ALL * 2


# -- Q.24 frequency: operate within +-1.5 %, non-operate beyond +-3.5 % ----------------------------------


@pytest.mark.parametrize("group", ["low", "high"])
@pytest.mark.parametrize("sign", [1, -1])
def test_frequency_within_1_5_percent_operates(group: str, sign: int, rng: np.random.Generator) -> None:
    kw = {f"dev_{group}": sign * 0.015}
    x = mulaw(keyed(ALL * 2, rng, level=-20.0, **kw))
    assert detect(x) == ALL * 2


@pytest.mark.parametrize("group", ["low", "high"])
@pytest.mark.parametrize("sign", [1, -1])
@pytest.mark.parametrize("pct", [3.5, 4.5, 5.5])
def test_frequency_beyond_3_5_percent_does_not_operate(
    group: str, sign: int, pct: float, rng: np.random.Generator
) -> None:
    kw = {f"dev_{group}": sign * pct / 100}
    assert detect(mulaw(keyed(ALL * 2, rng, level=-10.0, **kw))) == ""


@pytest.mark.parametrize("signs", [(1, 1), (1, -1), (-1, 1), (-1, -1)])
def test_both_groups_1_5_percent_off_at_minimum_duration(
    signs: tuple[int, int], rng: np.random.Generator
) -> None:
    x = mulaw(keyed(ALL, rng, on_ms=40, level=-20.0, dev_low=signs[0] * 0.015, dev_high=signs[1] * 0.015))
    assert detect(x) == ALL


# -- Q.24 twist: 8 dB normal and 4 dB reverse operate ----------------------------------------------------


def test_normal_twist_8_db_operates(rng: np.random.Generator) -> None:
    # Q.24's worst corner: the weak tone at -33 dBm0 and only 40 ms long.
    assert detect(mulaw(keyed(ALL, rng, level=-10.0, twist=-8.0))) == ALL
    assert detect(mulaw(keyed(ALL, rng, on_ms=40, level=-25.0, twist=-8.0))) == ALL


def test_reverse_twist_4_db_operates(rng: np.random.Generator) -> None:
    assert detect(mulaw(keyed(ALL, rng, level=-14.0, twist=4.0))) == ALL
    assert detect(mulaw(keyed(ALL, rng, on_ms=40, level=-29.0, twist=4.0))) == ALL


@pytest.mark.parametrize("twist", [-13.0, 10.0])
def test_twist_beyond_the_limits_does_not_operate(twist: float, rng: np.random.Generator) -> None:
    # The documented limits are 10 dB normal and 7 dB reverse; 3 dB past them must not operate.
    assert detect(mulaw(keyed(ALL, rng, level=-10.0 - max(twist, 0.0), twist=twist))) == ""


# -- Q.24 level: operate from 0 to -25 dBm0 per tone, not at -55 dBm0 and below ---------------------------


@pytest.mark.parametrize("level", [3.0, 0.0, -25.0])
def test_levels_0_to_minus_25_dbm0_operate(level: float, rng: np.random.Generator) -> None:
    # At 0 dBm0 per tone the pair's peaks exceed full scale: the clipped tones must still be found.
    assert detect(mulaw(keyed(ALL, rng, on_ms=40, level=level))) == ALL


@pytest.mark.parametrize("level", [-55.0, -65.0])
def test_levels_at_and_below_minus_55_dbm0_do_not_operate(level: float, rng: np.random.Generator) -> None:
    assert detect(mulaw(keyed(ALL * 2, rng, on_ms=200, level=level))) == ""


def test_min_level_is_a_parameter(rng: np.random.Generator) -> None:
    x = keyed("5", rng, level=-30.0)
    assert "".join(e.digit for e in events(x)) == "5"
    assert events(x, params=DtmfParams(min_level_dbm0=-25.0)) == []


# -- Q.24 duration: 40 ms operates, 23 ms and less does not ---------------------------------------------


def test_40_ms_tones_operate(rng: np.random.Generator) -> None:
    assert detect(mulaw(keyed(ALL * 4, rng, on_ms=40, off_ms=60))) == ALL * 4


@pytest.mark.parametrize("dur", [10.0, 20.0, 23.0])
def test_23_ms_tones_and_shorter_do_not_operate(dur: float, rng: np.random.Generator) -> None:
    assert detect(mulaw(keyed(ALL * 4, rng, on_ms=dur, off_ms=60))) == ""


# -- Q.24 pauses: 40 ms separates, 10 ms interruptions are bridged --------------------------------------


@pytest.mark.parametrize("on_ms", [40.0, 50.0, 200.0])
def test_40_ms_pause_separates_repeated_digits(on_ms: float, rng: np.random.Generator) -> None:
    for d in "15#D":
        x = mulaw(keyed(d * 8, rng, on_ms=on_ms, off_ms=40.0, jitter_ms=0.0))
        assert detect(x) == d * 8


@pytest.mark.parametrize("gap", [2.0, 5.0, 10.0])
def test_interruption_of_10_ms_or_less_is_bridged(gap: float, rng: np.random.Generator) -> None:
    x = mulaw(keyed(ALL * 2, rng, on_ms=120.0 + gap, gap_ms=gap))
    assert detect(x) == ALL * 2


def test_dropout_keeps_one_event_spanning_the_gap(rng: np.random.Generator) -> None:
    x = np.concatenate([silence(100), burst("7", 300, rng, gap_ms=10), silence(100)])
    (ev,) = events(x)
    assert ev.digit == "7"
    assert abs(ev.start - ms(100)) <= 40 and abs(ev.end - ms(400)) <= 40


def test_changing_digit_without_pause(rng: np.random.Generator) -> None:
    x = np.concatenate(
        [silence(50), burst("1", 60, rng), burst("9", 60, rng), burst("1", 60, rng), silence(100)]
    )
    assert detect(x) == "191"


# -- Q.24 noise, long presses, dial tone -----------------------------------------------------------------


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_15_db_signal_to_noise(seed: int) -> None:
    rng = np.random.default_rng(1000 + seed)
    x = keyed(ALL * 2, rng, level=-10.0)
    x += noise(len(x), -25.0, rng)  # per-tone level over full-band noise: 15 dB
    assert detect(mulaw(x)) == ALL * 2


@pytest.mark.parametrize("level", [-40.0, -20.0, -5.0])
def test_noise_alone_is_silent(level: float, rng: np.random.Generator) -> None:
    assert detect(mulaw(noise(FS * 3, level, rng))) == ""


@pytest.mark.parametrize("snr", [None, 15.0])
def test_long_press_is_one_digit(snr: float | None, rng: np.random.Generator) -> None:
    x = keyed("5#", rng, on_ms=2000.0)
    if snr is not None:
        x += noise(len(x), -10.0 - snr, rng)
    evs = events(mulaw(x))
    assert [e.digit for e in evs] == ["5", "#"]
    assert all(1950 * 8 <= e.end - e.start <= 2050 * 8 for e in evs)


@pytest.mark.parametrize(
    ("freqs", "level"),
    [((350.0, 440.0), 0.0), ((350.0, 440.0), -20.0), ((425.0,), -3.0), ((400.0, 450.0), -10.0)],
)
def test_dial_tone_alone_is_silent(freqs: tuple[float, ...], level: float) -> None:
    t = np.arange(FS * 3) / FS
    x = sum(peak(level) * np.sin(2 * np.pi * f * t) for f in freqs)
    assert detect(mulaw(np.asarray(x))) == ""


def test_digits_under_dial_tone(rng: np.random.Generator) -> None:
    x = keyed(ALL * 2, rng, level=-15.0)
    t = np.arange(len(x)) / FS
    x += peak(-25.0) * (np.sin(2 * np.pi * 350 * t) + np.sin(2 * np.pi * 440 * t))
    assert detect(mulaw(x)) == ALL * 2


# -- talk-off guards on synthetic sounds (the speech and music corpus is the bench's job) ------------------


@pytest.mark.parametrize("f", ROW_FREQS + COL_FREQS)
def test_single_tone_is_silent(f: float) -> None:
    t = np.arange(FS) / FS
    assert detect(peak(-5.0) * np.sin(2 * np.pi * f * t)) == ""


@pytest.mark.parametrize(
    ("third", "rel_db"),
    [(770.0, 0.0), (1336.0, 0.0), (2000.0, 0.0), (300.0, 0.0), (852.0, -5.0), (1477.0, -5.0)],
)
def test_a_third_strong_tone_spoils_the_pair(third: float, rel_db: float) -> None:
    # At -5 dB the pair still carries 86 % of the energy: only the next-strongest-tone test refuses it.
    t = np.arange(FS) / FS
    x = peak(-10.0) * (np.sin(2 * np.pi * 697 * t) + np.sin(2 * np.pi * 1209 * t + 1.0))
    x += peak(-10.0 + rel_db) * np.sin(2 * np.pi * third * t + 2.0)
    assert detect(x) == ""


@settings(max_examples=25, deadline=None, derandomize=True)
@given(
    f0=st.floats(80.0, 400.0),
    glide=st.floats(-0.3, 0.3),
    formants=st.lists(st.floats(300.0, 3000.0), min_size=2, max_size=3),
    seed=st.integers(0, 2**16),
)
def test_voiced_sounds_are_silent(f0: float, glide: float, formants: list[float], seed: int) -> None:
    """Harmonic series shaped by formants and gliding in pitch, like a vowel: never a digit."""
    rng = np.random.default_rng(seed)
    n = FS // 2
    f_inst = f0 * (1.0 + glide * np.arange(n) / n)
    phase = 2 * np.pi * np.cumsum(f_inst) / FS
    x = np.zeros(n)
    for k in range(1, int(3400 / f0) + 1):
        fk = k * f0
        gain = sum(1.0 / (1.0 + ((fk - fm) / 90.0) ** 2) for fm in formants) + 0.05
        x += gain / k * np.sin(k * phase + rng.uniform(0, 2 * np.pi))
    x *= peak(-5.0) / np.max(np.abs(x))
    assert detect(mulaw(x)) == ""


# -- event times and the streaming interface -------------------------------------------------------------


def test_event_times_match_the_tone(rng: np.random.Generator) -> None:
    for _ in range(40):
        d = ALL[int(rng.integers(16))]
        lead, dur = int(rng.integers(200, 900)), int(rng.integers(ms(40), ms(600)))
        x = np.concatenate(
            [np.zeros(lead), burst(d, dur / 8, rng, level=float(rng.uniform(-30, 0))), silence(100)]
        )
        (ev,) = events(mulaw(x))
        assert ev.digit == d
        assert abs(ev.start - lead) <= 40  # 5 ms
        assert abs(ev.end - (lead + ms(dur / 8))) <= 40


def test_digit_is_reported_once_it_ends(rng: np.random.Generator) -> None:
    det = DtmfDetector()
    tone = pcm(burst("8", 500, rng))
    assert det.feed(tone) == ""  # still sounding
    out = "".join(det.feed(np.zeros(160, np.int16)) for _ in range(3))
    assert out == "8"
    assert det.flush() == ""


def test_flush_reports_a_digit_still_sounding(rng: np.random.Generator) -> None:
    det = DtmfDetector()
    x = pcm(np.concatenate([silence(43), burst("0", 300, rng)]))  # not a whole number of hops
    assert det.feed_events(x) == []
    (ev,) = det.flush_events()
    assert ev.digit == "0" and ev.end >= len(x) - 80
    assert det.flush() == "" and det.position == len(x)


@pytest.mark.parametrize("frame", [1, 7, 40, 80, 160, 161, 333, 4000])
def test_any_frame_length_gives_the_same_events(frame: int) -> None:
    rng = np.random.default_rng(99)
    x = keyed("19*#", rng, on_ms=45, off_ms=45)
    x = mulaw(x + noise(len(x), -35.0, rng))
    assert events(x, frame) == events(x, 160)
    assert [e.digit for e in events(x, frame)] == list("19*#")


def test_bad_input_is_refused() -> None:
    with pytest.raises(ValueError):
        DtmfDetector().feed(np.zeros((2, 160), np.int16))
    bank = DtmfDetectorBank()
    with pytest.raises(ValueError, match="multiple of 40"):
        bank.feed(["a"], np.zeros((1, 150), np.int16))
    with pytest.raises(ValueError, match="shape"):
        bank.feed(["a", "b"], np.zeros((1, 160), np.int16))
    with pytest.raises(ValueError, match="twice"):
        bank.feed(["a", "a"], np.zeros((2, 160), np.int16))
    with pytest.raises(ValueError):
        DtmfParams(on_blocks=0)


# -- the vectorised bank ---------------------------------------------------------------------------------


def _legs_signals(rng: np.random.Generator) -> dict[str, np.ndarray]:
    n = ms(4000)

    def fit(x: np.ndarray) -> np.ndarray:
        return pcm(np.concatenate([x, np.zeros(max(0, n - len(x)))])[:n])

    t = np.arange(n) / FS
    noisy = keyed("0123", rng, on_ms=80)
    return {
        "keys": fit(mulaw(keyed(ALL, rng, on_ms=45, off_ms=60))),
        "noisy": fit(mulaw(noisy + noise(len(noisy), -28.0, rng))),
        "repeat": fit(keyed("9" * 10, rng, on_ms=40, off_ms=40)),
        "long": fit(keyed("#", rng, on_ms=1500, gap_ms=8)),
        "dial": fit(peak(-10.0) * (np.sin(2 * np.pi * 350 * t) + np.sin(2 * np.pi * 440 * t))),
        "quiet": np.zeros(n, np.int16),
    }


def test_bank_verdicts_equal_the_single_detector(rng: np.random.Generator) -> None:
    sig = _legs_signals(rng)
    expected = {leg: events(x) for leg, x in sig.items()}
    assert [e.digit for e in expected["keys"]] == list(ALL)
    bank = DtmfDetectorBank()
    got: dict[str, list[ToneEvent]] = {leg: [] for leg in sig}
    order = list(sig)
    for k in range(ms(4000) // 160):
        rng.shuffle(order)  # legs come in any order from tick to tick
        frames = np.stack([sig[leg][k * 160 : (k + 1) * 160] for leg in order])
        for leg, ev in bank.feed(order, frames):
            got[leg].append(ev)
    for leg in sig:
        got[leg] += bank.flush(leg)
    assert got == expected


def test_bank_legs_join_and_leave_independently(rng: np.random.Generator) -> None:
    sig = _legs_signals(rng)
    bank = DtmfDetectorBank()
    late: list[ToneEvent] = []
    for k in range(ms(4000) // 160):
        legs = ["keys"] if k < 50 else ["keys", "late"]
        frames = [sig["keys"][k * 160 : (k + 1) * 160]]
        if k >= 50:
            frames.append(sig["repeat"][(k - 50) * 160 : (k - 49) * 160])
        late += [ev for leg, ev in bank.feed(legs, np.stack(frames)) if leg == "late"]
        if k == 120:
            bank.remove("keys")
            assert "keys" not in bank and len(bank) == 1
    late += bank.remove("late")
    # The late leg counts its own samples from its first frame, like a detector started with it.
    assert late == events(sig["repeat"][: (ms(4000) // 160 - 50) * 160])
    assert bank.remove("nobody") == []


def test_bank_many_legs_in_one_tick(rng: np.random.Generator) -> None:
    n_legs = 64
    x = pcm(keyed("5", rng, on_ms=60))
    x = np.concatenate([x, np.zeros(-len(x) % 160, np.int16)])
    bank = DtmfDetectorBank()
    shifted = np.stack([np.roll(x, 3 * i) for i in range(n_legs)])  # every alignment to the 40-sample grid
    seen = []
    for k in range(len(x) // 160):
        seen += bank.feed(list(range(n_legs)), shifted[:, k * 160 : (k + 1) * 160])
    for leg in range(n_legs):
        seen += [(leg, ev) for ev in bank.flush(leg)]
    assert sorted(leg for leg, _ in seen) == list(range(n_legs))
    assert {ev.digit for _, ev in seen} == {"5"}
