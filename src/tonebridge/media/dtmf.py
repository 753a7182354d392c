"""In-band DTMF detection: turns 8 kHz call audio into key presses with start and end times (ITU-T Q.23/Q.24).

Method (one vectorised pass per media tick, every leg at once):

* Analysis blocks of `BLOCK` = 160 samples (20 ms) with a Hann window, one every `HOP` = 40 samples (5 ms).
  Each block is correlated with the eight Q.23 frequencies (a bank of windowed single-bin DFTs: the same
  numbers a Goertzel filter gives, but computed as one matrix product for all legs and blocks), and its
  windowed energy is taken.
* The frequency of each group's strongest tone is measured, not assumed: the phase advance of its DFT bin
  between consecutive blocks is the tone's true frequency (a phase vocoder). The Q.24 limits (operate within
  +-1.5 %, non-operate beyond +-3.5 %) are then a plain test on the measured deviation, so acceptance no
  longer hangs on the shape of a filter's skirt, and both groups are held to the same limit.
* A block is a candidate digit when: both tones are above the level floor, their levels (corrected for the
  window's loss at the measured deviation) differ by no more than the twist limits, each is the clear
  peak of its group, and together they carry almost all of the block's energy. Speech and music rarely hold
  two pure tones at Q.23 frequencies with nothing else; that fraction-of-energy test is the main guard
  against talk-off, helped by requiring the measured frequencies to stay steady while a digit is confirmed.
* A run of candidate blocks of one digit lasting `on_blocks` hops confirms it (Q.24 duration: 40 ms
  operates, 23 ms and less does not). A confirmed digit ends after `off_blocks` hops without it, so
  interruptions of 10 ms and less are bridged and a 40 ms pause separates repeated digits. A different
  digit confirmed while one is active ends the first.

A digit is reported once, when it ends, as a `ToneEvent` with sample indices of its start and end.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import numpy as np

SAMPLE_RATE = 8000
FRAME = 160  # one 20 ms G.711 frame: the unit the media tick feeds
BLOCK = 160  # analysis window, samples
HOP = 40  # analysis step, samples (4 blocks per frame)

# ITU-T Q.23 Table 1: low (row) and high (column) group frequencies and the keypad they span.
ROW_FREQS: tuple[float, ...] = (697.0, 770.0, 852.0, 941.0)
COL_FREQS: tuple[float, ...] = (1209.0, 1336.0, 1477.0, 1633.0)
FREQS: tuple[float, ...] = ROW_FREQS + COL_FREQS
DIGITS = "123A456B789C*0#D"  # DIGITS[4 * row + col]
KEYPAD: tuple[tuple[str, ...], ...] = tuple(tuple(DIGITS[4 * r : 4 * r + 4]) for r in range(4))

# G.711 level convention: a full-scale sine is +3.14 dBm0.
_FULL_SCALE_DBM0 = 3.14


def dbm0_to_power(level_dbm0: float) -> float:
    """Mean-square value (int16 units squared) of a sine at `level_dbm0`."""
    peak = 32767.0 * 10.0 ** ((level_dbm0 - _FULL_SCALE_DBM0) / 20.0)
    return peak * peak / 2.0


def digit_freqs(digit: str) -> tuple[float, float]:
    """The (low, high) Q.23 frequencies of a key."""
    i = DIGITS.index(digit.upper())
    return ROW_FREQS[i // 4], COL_FREQS[i % 4]


@dataclass(frozen=True)
class ToneEvent:
    """One key press: `start` and `end` are sample indices (8 kHz) since the leg's stream began."""

    digit: str
    start: int
    end: int


@dataclass(frozen=True)
class DtmfParams:
    """Decision thresholds. The defaults meet Q.24 with margin; see docs/dtmf.md for the measurements."""

    min_level_dbm0: float = -42.0  # per tone; Q.24 operates to -25 dBm0 and must not at -55 dBm0
    max_normal_twist_db: float = 10.0  # high group weaker than low; Q.24 asks for 8 dB
    max_reverse_twist_db: float = 7.0  # high group stronger; Q.24 asks for 4 dB
    max_deviation: float = 0.025  # relative; halfway between Q.24's 1.5 % (operate) and 3.5 % (non-operate)
    min_energy_fraction: float = 0.80  # the two tones' share of the block's energy
    max_group_second_db: float = -6.0  # next-strongest tone of a group relative to its peak
    max_frequency_spread: float = 0.006  # relative drift of a tone allowed while a digit is confirmed
    on_blocks: int = 5  # hops of candidate blocks that confirm a digit
    off_blocks: int = 6  # hops without the digit that end it

    def __post_init__(self) -> None:
        if self.on_blocks < 1 or self.off_blocks < 1:
            raise ValueError("on_blocks and off_blocks must be at least 1")
        if not 0.0 < self.min_energy_fraction <= 1.0:
            raise ValueError("min_energy_fraction must be in (0, 1]")


# --------------------------------------------------------------------------------------------------------
# The filter bank: constants shared by every detector.

_W = 0.5 - 0.5 * np.cos(2.0 * np.pi * (np.arange(BLOCK) + 0.5) / BLOCK)
_OMEGA = 2.0 * np.pi * np.asarray(FREQS) / SAMPLE_RATE
_I = np.arange(BLOCK)
# Columns 0..7 the real parts, 8..15 the imaginary parts of sum w[i] x[i] exp(-j omega i).
_BASIS = np.concatenate(
    [_W[:, None] * np.cos(_I[:, None] * _OMEGA), -_W[:, None] * np.sin(_I[:, None] * _OMEGA)], axis=1
)
_W2 = _W * _W
_SUM_W = float(_W.sum())
_SUM_W2 = float(_W2.sum())
# A sine of mean-square p gives |Y|^2 = p * sum(w)^2 / 2 at its own frequency.
_POWER_SCALE = 2.0 / (_SUM_W * _SUM_W)
# Expected phase advance of each bin over one hop, removed to leave the deviation.
_HOP_ROTATION = np.exp(-1j * _OMEGA * HOP)
# Window gain |W(delta)|^2 / |W(0)|^2 against deviation in rad/sample, to undo the loss of an off-centre tone.
_GAIN_GRID = np.linspace(0.0, 2.0 * np.pi * 120.0 / SAMPLE_RATE, 241)
_GAIN = (np.abs(np.exp(1j * np.outer(_GAIN_GRID, _I)) @ _W) / _SUM_W) ** 2


@dataclass
class _Features:
    """Per-block decisions for (legs, blocks): the digit index or -1, and each group's deviation."""

    digit: np.ndarray
    dev_row: np.ndarray
    dev_col: np.ndarray


class _Legs:
    """Per-leg state, one row per slot; grown on demand."""

    def __init__(self, capacity: int) -> None:
        self.capacity = 0
        self.hist = np.zeros((0, BLOCK - HOP))
        self.prev = np.zeros((0, 8), dtype=complex)
        self.pos = np.zeros(0, dtype=np.int64)  # stream index of the next new sample
        self.run_digit = np.zeros(0, dtype=np.int64)
        self.run_len = np.zeros(0, dtype=np.int64)
        self.run_start = np.zeros(0, dtype=np.int64)
        self.run_lo = np.zeros((0, 2))
        self.run_hi = np.zeros((0, 2))
        self.act_digit = np.zeros(0, dtype=np.int64)
        self.act_start = np.zeros(0, dtype=np.int64)
        self.act_end = np.zeros(0, dtype=np.int64)
        self.act_gap = np.zeros(0, dtype=np.int64)
        self.grow(capacity)

    _FIELDS = (
        "hist", "prev", "pos", "run_digit", "run_len", "run_start", "run_lo", "run_hi",
        "act_digit", "act_start", "act_end", "act_gap",
    )  # fmt: skip

    def grow(self, capacity: int) -> None:
        if capacity <= self.capacity:
            return
        for name in self._FIELDS:
            old = getattr(self, name)
            new = np.zeros((capacity,) + old.shape[1:], dtype=old.dtype)
            new[: self.capacity] = old
            setattr(self, name, new)
        start = self.capacity
        self.capacity = capacity
        self.reset(np.arange(start, capacity))

    def reset(self, slots: np.ndarray) -> None:
        self.hist[slots] = 0.0
        self.prev[slots] = 0.0
        self.pos[slots] = 0
        self.run_digit[slots] = -1
        self.run_len[slots] = 0
        self.run_start[slots] = 0
        self.act_digit[slots] = -1
        self.act_start[slots] = 0
        self.act_end[slots] = 0
        self.act_gap[slots] = 0


class DtmfDetectorBank:
    """DTMF detection for many legs at once: one call per media tick, every leg's frame in one array.

    `feed(leg_ids, frames)` takes the tick's frames as an (n_legs, k * HOP) array of int16 (the tick's
    160 samples per leg in practice) and returns the key presses that ended in it, as (leg id, ToneEvent)
    pairs. Legs are created on first sight and keep their state until `remove`.
    """

    def __init__(self, params: DtmfParams | None = None) -> None:
        self.params = params or DtmfParams()
        p = self.params
        self._min_power = dbm0_to_power(p.min_level_dbm0)
        self._normal_twist = 10.0 ** (-p.max_normal_twist_db / 10.0)
        self._reverse_twist = 10.0 ** (p.max_reverse_twist_db / 10.0)
        self._second = 10.0 ** (p.max_group_second_db / 10.0)
        self._legs = _Legs(8)
        self._slots: dict[Hashable, int] = {}
        self._free: list[int] = []

    # -- leg bookkeeping ----------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._slots)

    def __contains__(self, leg_id: Hashable) -> bool:
        return leg_id in self._slots

    def _slot(self, leg_id: Hashable) -> int:
        slot = self._slots.get(leg_id)
        if slot is None:
            if self._free:
                slot = self._free.pop()
            else:
                slot = len(self._slots)
                if slot >= self._legs.capacity:
                    self._legs.grow(max(8, 2 * self._legs.capacity))
            self._legs.reset(np.array([slot]))
            self._slots[leg_id] = slot
        return slot

    def position(self, leg_id: Hashable) -> int:
        """Samples fed to a leg so far (0 for a leg not seen)."""
        slot = self._slots.get(leg_id)
        return 0 if slot is None else int(self._legs.pos[slot])

    def flush(self, leg_id: Hashable) -> list[ToneEvent]:
        """End a leg's stream: report a confirmed digit still sounding, and forget the digit in progress."""
        slot = self._slots.get(leg_id)
        if slot is None:
            return []
        legs = self._legs
        out: list[ToneEvent] = []
        if legs.act_digit[slot] >= 0:
            out.append(ToneEvent(DIGITS[legs.act_digit[slot]], int(legs.act_start[slot]), int(legs.act_end[slot])))
        pos = legs.pos[slot]
        legs.reset(np.array([slot]))
        legs.pos[slot] = pos
        return out

    def remove(self, leg_id: Hashable) -> list[ToneEvent]:
        """Drop a leg (its call ended); returns what `flush` would. Unknown ids are ignored."""
        out = self.flush(leg_id)
        slot = self._slots.pop(leg_id, None)
        if slot is not None:
            self._free.append(slot)
        return out

    # -- the tick -----------------------------------------------------------------------------------------

    def feed(self, leg_ids: Sequence[Hashable], frames: np.ndarray) -> list[tuple[Hashable, ToneEvent]]:
        """Run one tick: `frames[i]` is the new audio of `leg_ids[i]` (int16, a whole number of HOPs)."""
        frames = np.asarray(frames)
        if frames.ndim != 2 or frames.shape[0] != len(leg_ids):
            raise ValueError(f"frames must have shape (len(leg_ids), n); got {frames.shape} for {len(leg_ids)} legs")
        if frames.shape[1] % HOP:
            raise ValueError(f"frame length must be a multiple of {HOP} samples; got {frames.shape[1]}")
        if len(set(leg_ids)) != len(leg_ids):
            raise ValueError("a leg id appears twice in one tick")
        if frames.shape[1] == 0 or not len(leg_ids):
            return []
        slots = np.fromiter((self._slot(leg) for leg in leg_ids), dtype=np.int64, count=len(leg_ids))
        events = self._run(slots, frames.astype(np.float64))
        return [(leg_ids[i], ev) for i, ev in events]

    def _features(self, slots: np.ndarray, x: np.ndarray) -> _Features:
        """Classify every block ending in this tick (vectorised over legs and blocks)."""
        legs, p = self._legs, self.params
        n, m = x.shape[0], x.shape[1] // HOP
        full = np.concatenate([legs.hist[slots], x], axis=1)
        legs.hist[slots] = full[:, -(BLOCK - HOP) :]
        blocks = np.lib.stride_tricks.sliding_window_view(full, BLOCK, axis=1)[:, ::HOP]  # (n, m, BLOCK)
        proj = blocks @ _BASIS  # (n, m, 16)
        y = proj[..., :8] + 1j * proj[..., 8:]
        energy = (blocks * blocks) @ _W2 / _SUM_W2  # windowed mean square, (n, m)
        power = (proj[..., :8] ** 2 + proj[..., 8:] ** 2) * _POWER_SCALE

        # Phase vocoder: the bin's phase advance over one hop, less the nominal advance, is the deviation.
        prev = np.concatenate([legs.prev[slots][:, None, :], y[:, :-1]], axis=1)
        legs.prev[slots] = y[:, -1]
        delta = np.angle(y * np.conj(prev) * _HOP_ROTATION) / HOP  # rad/sample, |.| < pi / HOP
        dev = delta / _OMEGA

        rows, cols = power[..., :4], power[..., 4:]
        r = np.argmax(rows, axis=-1)
        c = np.argmax(cols, axis=-1)
        r_pow = np.take_along_axis(rows, r[..., None], -1)[..., 0]
        c_pow = np.take_along_axis(cols, c[..., None], -1)[..., 0]
        r_dev = np.take_along_axis(dev, r[..., None], -1)[..., 0]
        c_dev = np.take_along_axis(dev, (c + 4)[..., None], -1)[..., 0]
        r_delta = np.abs(np.take_along_axis(delta, r[..., None], -1)[..., 0])
        c_delta = np.abs(np.take_along_axis(delta, (c + 4)[..., None], -1)[..., 0])
        # The window loses a little of an off-centre tone; put it back so level and twist are the tone's own.
        r_lvl = r_pow / np.interp(r_delta, _GAIN_GRID, _GAIN)
        c_lvl = c_pow / np.interp(c_delta, _GAIN_GRID, _GAIN)
        r_second = np.sort(rows, axis=-1)[..., -2]
        c_second = np.sort(cols, axis=-1)[..., -2]

        ok = (r_lvl >= self._min_power) & (c_lvl >= self._min_power)
        ok &= (c_lvl >= r_lvl * self._normal_twist) & (c_lvl <= r_lvl * self._reverse_twist)
        ok &= (np.abs(r_dev) <= p.max_deviation) & (np.abs(c_dev) <= p.max_deviation)
        ok &= (r_second <= r_pow * self._second) & (c_second <= c_pow * self._second)
        ok &= r_lvl + c_lvl >= p.min_energy_fraction * energy
        digit = np.where(ok, 4 * r + c, -1)
        del m
        return _Features(digit, r_dev, c_dev)

    def _run(self, slots: np.ndarray, x: np.ndarray) -> list[tuple[int, ToneEvent]]:
        legs, p = self._legs, self.params
        f = self._features(slots, x)
        n, m = f.digit.shape
        base = legs.pos[slots]  # stream index of the first new sample
        legs.pos[slots] = base + x.shape[1]
        events: list[tuple[int, ToneEvent]] = []
        # Nothing sounding and nothing pending anywhere: the common case (silence, speech) costs no more.
        if not (f.digit >= 0).any() and not (legs.run_len[slots] > 0).any() and not (legs.act_digit[slots] >= 0).any():
            return events

        run_digit, run_len, run_start = legs.run_digit[slots], legs.run_len[slots], legs.run_start[slots]
        run_lo, run_hi = legs.run_lo[slots], legs.run_hi[slots]
        act_digit, act_start, act_end = legs.act_digit[slots], legs.act_start[slots], legs.act_end[slots]
        act_gap = legs.act_gap[slots]
        # Block j of this tick spans stream samples [b0 + j*HOP, b0 + j*HOP + BLOCK), b0 = base - BLOCK + HOP.
        b0 = base - (BLOCK - HOP)
        for j in range(m):
            d = f.digit[:, j]
            devs = np.stack([f.dev_row[:, j], f.dev_col[:, j]], axis=1)
            bstart = b0 + j * HOP
            # Runs of consecutive candidate blocks of one digit, with the frequencies' range inside the run.
            same = (d >= 0) & (d == run_digit)
            lo = np.where(same[:, None], np.minimum(run_lo, devs), devs)
            hi = np.where(same[:, None], np.maximum(run_hi, devs), devs)
            steady = (hi - lo).max(axis=1) <= p.max_frequency_spread
            cont = same & steady
            run_len = np.where(cont, run_len + 1, np.where(d >= 0, 1, 0))
            run_start = np.where(cont, run_start, bstart)
            run_lo = np.where(cont[:, None], lo, devs)
            run_hi = np.where(cont[:, None], hi, devs)
            run_digit = d

            # The active digit goes on while its blocks keep coming; gaps shorter than off_blocks are bridged.
            here = (act_digit >= 0) & (d == act_digit)
            act_gap = np.where(here, 0, act_gap + 1)
            act_end = np.where(here, bstart + BLOCK - _EDGE, act_end)
            confirm = (run_len >= p.on_blocks) & (d != act_digit) & (d >= 0)
            ended = (act_digit >= 0) & ((act_gap >= p.off_blocks) | confirm)
            for i in np.flatnonzero(ended):
                events.append((int(i), ToneEvent(DIGITS[act_digit[i]], int(act_start[i]), int(act_end[i]))))
            act_digit = np.where(ended, -1, act_digit)
            act_digit = np.where(confirm, d, act_digit)
            act_start = np.where(confirm, run_start + _EDGE, act_start)
            act_end = np.where(confirm, bstart + BLOCK - _EDGE, act_end)
            act_gap = np.where(confirm, 0, act_gap)

        legs.run_digit[slots], legs.run_len[slots], legs.run_start[slots] = run_digit, run_len, run_start
        legs.run_lo[slots], legs.run_hi[slots] = run_lo, run_hi
        legs.act_digit[slots], legs.act_start[slots], legs.act_end[slots] = act_digit, act_start, act_end
        legs.act_gap[slots] = act_gap
        return events


# A block first passes when the tone fills most of it; this puts reported edges back on the tone's edges.
_EDGE = 40


class DtmfDetector:
    """One leg's streaming detector: feed frames of any length, get the digits that ended in them."""

    def __init__(self, params: DtmfParams | None = None) -> None:
        self._bank = DtmfDetectorBank(params)
        self._pending = np.zeros(0, dtype=np.int16)

    @property
    def position(self) -> int:
        """Samples fed so far."""
        return self._bank.position(0) + len(self._pending)

    def feed_events(self, frame: np.ndarray) -> list[ToneEvent]:
        """Feed int16 samples; returns the key presses that ended within them, with their times."""
        a = np.asarray(frame)
        if a.ndim != 1:
            raise ValueError(f"a frame is one-dimensional; got shape {a.shape}")
        if self._pending.size:
            a = np.concatenate([self._pending, a])
        whole = len(a) - len(a) % HOP
        self._pending = a[whole:]
        if whole == 0:
            # still register the leg so position() and flush() see it
            self._bank._slot(0)
            return []
        return [ev for _, ev in self._bank.feed((0,), a[None, :whole])]

    def feed(self, frame: np.ndarray) -> str:
        """Feed int16 samples; returns the digits that ended within them."""
        return "".join(ev.digit for ev in self.feed_events(frame))

    def flush_events(self) -> list[ToneEvent]:
        """End of stream: the digit still sounding, if it was confirmed."""
        out: list[ToneEvent] = []
        if self._pending.size:
            pad = np.zeros(HOP - len(self._pending), dtype=np.int16)
            out += [ev for _, ev in self._bank.feed((0,), np.concatenate([self._pending, pad])[None, :])]
            self._pending = np.zeros(0, dtype=np.int16)
        return out + self._bank.flush(0)

    def flush(self) -> str:
        """End of stream: the digit still sounding, if it was confirmed."""
        return "".join(ev.digit for ev in self.flush_events())
