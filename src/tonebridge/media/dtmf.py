"""In-band DTMF detection: turns 8 kHz call audio into key presses with start and end times (ITU-T Q.23/Q.24).

Method (one vectorised pass per media tick, every leg at once; docs/dtmf.md has the reasoning and figures):

* Analysis blocks of `BLOCK` = 160 samples (20 ms) under a Hann window, one every `HOP` = 40 samples (5 ms).
  Each block is correlated with the eight Q.23 frequencies: a bank of windowed single-bin DFTs (the numbers
  a Goertzel filter gives, computed as one matrix product over every leg and block of the tick), and its
  windowed energy is taken.
* The frequency of each group's strongest tone is measured, not assumed: the phase advance of its bin from
  one block to the next is the tone's own frequency (a phase vocoder). The Q.24 frequency limits (operate
  within +-1.5 %, not beyond +-3.5 %) become a plain test on the measured deviation, the same for both
  groups, instead of depending on the skirt of a filter.
* A block is a candidate digit when both tones reach the level floor, their levels (restored for the
  window's loss at the measured deviation) are within the twist limits, each stands clear of the next tone
  of its group, and together they carry nearly all of the block's energy. Speech and music seldom hold two
  pure tones at Q.23 frequencies with nothing else: that share of energy is the main guard against talk-off.
* `on_blocks` consecutive candidate blocks of one digit confirm it (Q.24: 40 ms operates, 23 ms does not);
  a confirmed digit ends after `off_blocks` blocks without it, so interruptions of 10 ms and less are
  bridged and a 40 ms pause separates repeated digits. Another digit confirmed meanwhile ends the first.

A digit is reported once, when it ends, as a `ToneEvent` carrying the sample indices of its start and end.
"""

from __future__ import annotations

import functools
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
# sum w[i] x[i] exp(-j omega i) for the eight tones, as interleaved (real, imaginary) columns so that a
# float32 result can be viewed as complex64 without a copy.
_BASIS = np.stack(
    [_W[:, None] * np.cos(_I[:, None] * _OMEGA), -_W[:, None] * np.sin(_I[:, None] * _OMEGA)], axis=2
).reshape(BLOCK, 16)
_W2 = _W * _W
_SUM_W = float(_W.sum())
# Powers are kept as |Y|^2, where a sine of mean square p gives p * sum(w)^2 / 2 at its own frequency; the
# block's energy is scaled to the same unit, so a lone sine's power equals the block's energy.
_POWER_SCALE = 2.0 / (_SUM_W * _SUM_W)
_ENERGY_WEIGHTS = _W2 / float(_W2.sum()) / _POWER_SCALE
# Expected phase advance of each bin over one hop, removed to leave the deviation; and the factor that
# turns a residual advance (radians per hop) into a relative frequency deviation.
_HOP_ROTATION = np.exp(-1j * _OMEGA * HOP).astype(np.complex64)
_DEV_PER_RADIAN = 1.0 / (_OMEGA * HOP)
# Window gain |W(delta)|^2 / |W(0)|^2 against the residual advance per hop (delta * HOP), to undo the loss of
# an off-centre tone.
_GAIN_GRID = np.linspace(0.0, 2.0 * np.pi * 120.0 / SAMPLE_RATE, 241)
_GAIN = (np.abs(np.exp(1j * np.outer(_GAIN_GRID, _I)) @ _W) / _SUM_W) ** 2
_GAIN_GRID *= HOP
_GROUP_BASE = np.array([0, 4])  # bin index of each group's first tone


@functools.cache
def _tick_basis(blocks: int) -> tuple[np.ndarray, np.ndarray]:
    """Bank and energy weights for a tick of `blocks` hops, laid out over the tick's whole buffer (the
    BLOCK - HOP samples kept from before, then the new ones) so that one contiguous matrix product gives
    every block's eight bins (and another its energy) without building the overlapping blocks."""
    span = BLOCK - HOP + blocks * HOP
    basis = np.zeros((span, blocks * 16))
    weights = np.zeros((span, blocks))
    for j in range(blocks):
        basis[j * HOP : j * HOP + BLOCK, j * 16 : j * 16 + 16] = _BASIS
        weights[j * HOP : j * HOP + BLOCK, j] = _ENERGY_WEIGHTS
    # float32 halves the cost of the products; int16 audio needs no more precision than that.
    return basis.astype(np.float32), weights.astype(np.float32)


# A block first passes when the tone fills about three quarters of it: this puts reported edges back on the
# tone's own edges (measured: within 3 ms on clean tones).
_EDGE = 27


class _Track:
    """One leg's digit state machine, stepped once per analysis block (plain Python: few legs are ever busy)."""

    __slots__ = ("run_digit", "run_len", "run_start", "act_digit", "act_start", "act_end", "act_gap")

    def __init__(self) -> None:
        self.run_digit = -1  # digit of the current run of consecutive candidate blocks
        self.run_len = 0
        self.run_start = 0  # stream index of the run's first block
        self.act_digit = -1  # the confirmed digit now sounding, or -1
        self.act_start = 0
        self.act_end = 0
        self.act_gap = 0  # blocks since the active digit was last seen

    @property
    def busy(self) -> bool:
        return self.run_len > 0 or self.act_digit >= 0

    def close(self) -> ToneEvent:
        ev = ToneEvent(DIGITS[self.act_digit], self.act_start, self.act_end)
        self.act_digit = -1
        return ev

    def step(self, d: int, block_start: int, on_blocks: int, off_blocks: int) -> ToneEvent | None:
        """Advance by one block whose verdict is `d` (digit index or -1); returns a digit that ended."""
        if d < 0:
            self.run_digit, self.run_len = -1, 0
        elif d == self.run_digit:
            self.run_len += 1
        else:
            self.run_digit, self.run_len, self.run_start = d, 1, block_start
        ended = None
        if self.act_digit >= 0:
            if d == self.act_digit:
                self.act_gap = 0
                self.act_end = block_start + BLOCK - _EDGE
                return None
            self.act_gap += 1
            # Q.24: an interruption of 10 ms or less is not a new digit; a 40 ms pause is.
            if self.act_gap >= off_blocks:
                ended = self.close()
        if d >= 0 and self.run_len >= on_blocks:
            # Q.24: 40 ms of tone operates, 23 ms does not. A new digit also ends one still sounding.
            if self.act_digit >= 0:
                ended = self.close()
            self.act_digit, self.act_gap = d, 0
            self.act_start = max(0, self.run_start + _EDGE)
            self.act_end = block_start + BLOCK - _EDGE
        return ended


class DtmfDetectorBank:
    """DTMF detection for many legs at once: one call per media tick, every leg's frame in one array.

    `feed(leg_ids, frames)` takes the tick's frames as an (n_legs, k * HOP) array of int16 (the tick's
    160 samples per leg in practice) and returns the key presses that ended in it, as (leg id, ToneEvent)
    pairs in the order they ended. Legs are created on first sight and keep their state until `remove`.
    """

    def __init__(self, params: DtmfParams | None = None) -> None:
        self.params = params or DtmfParams()
        p = self.params
        self._min_power = dbm0_to_power(p.min_level_dbm0) / _POWER_SCALE
        self._normal_twist = 10.0 ** (-p.max_normal_twist_db / 10.0)
        self._reverse_twist = 10.0 ** (p.max_reverse_twist_db / 10.0)
        self._second = 10.0 ** (p.max_group_second_db / 10.0)
        # The most an accepted tone can lose to the window (the top column tone at the deviation limit):
        # blocks below the thresholds even after that loss is restored are discarded without further work.
        self._min_gain = float(np.interp(p.max_deviation * _OMEGA[-1] * HOP, _GAIN_GRID, _GAIN))
        self._slots: dict[Hashable, int] = {}
        self._free: list[int] = []
        self._tracks: list[_Track] = []
        self._busy: set[int] = set()
        self._hist = np.zeros((0, BLOCK - HOP), dtype=np.float32)
        self._prev = np.zeros((0, 16), dtype=np.float32)  # the last block's bins, for the phase advance
        self._pos = np.zeros(0, dtype=np.int64)

    # -- leg bookkeeping ----------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._slots)

    def __contains__(self, leg_id: Hashable) -> bool:
        return leg_id in self._slots

    def _slot(self, leg_id: Hashable) -> int:
        slot = self._slots.get(leg_id)
        if slot is not None:
            return slot
        if self._free:
            slot = self._free.pop()
        else:
            slot = len(self._tracks)
            if slot >= len(self._pos):
                cap = max(8, 2 * len(self._pos))
                self._hist = np.concatenate(
                    [self._hist, np.zeros((cap - len(self._hist), BLOCK - HOP), np.float32)]
                )
                self._prev = np.concatenate([self._prev, np.zeros((cap - len(self._prev), 16), np.float32)])
                self._pos = np.concatenate([self._pos, np.zeros(cap - len(self._pos), dtype=np.int64)])
            self._tracks.append(_Track())
        self._hist[slot] = 0.0
        self._prev[slot] = 0.0
        self._pos[slot] = 0
        self._tracks[slot] = _Track()
        self._slots[leg_id] = slot
        return slot

    def position(self, leg_id: Hashable) -> int:
        """Samples fed to a leg so far (0 for a leg not seen)."""
        slot = self._slots.get(leg_id)
        return 0 if slot is None else int(self._pos[slot])

    def flush(self, leg_id: Hashable) -> list[ToneEvent]:
        """End of a leg's stream: report a confirmed digit still sounding and forget any tone in progress."""
        slot = self._slots.get(leg_id)
        if slot is None:
            return []
        track = self._tracks[slot]
        out = [track.close()] if track.act_digit >= 0 else []
        self._tracks[slot] = _Track()
        self._busy.discard(slot)
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
        n = len(leg_ids)
        if frames.ndim != 2 or frames.shape[0] != n:
            raise ValueError(
                f"frames must have shape (len(leg_ids), samples); got {frames.shape} for {n} legs"
            )
        if frames.shape[1] % HOP:
            raise ValueError(f"the frame length must be a multiple of {HOP} samples; got {frames.shape[1]}")
        slot_list = [self._slot(leg) for leg in leg_ids]
        if len(set(slot_list)) != n:
            raise ValueError("a leg id appears twice in one tick")
        if n == 0 or frames.shape[1] == 0:
            return []
        # Legs fed in slot order (the usual case) are addressed by a slice: no gather, no scatter.
        sel: slice | np.ndarray
        if slot_list[0] == 0 and slot_list[-1] == n - 1 and slot_list == list(range(n)):
            sel = slice(0, n)
        else:
            sel = np.asarray(slot_list, dtype=np.int64)
        verdicts = self._classify(sel, frames)
        base = self._pos[sel] - (BLOCK - HOP)  # stream index of the first block's first sample
        self._pos[sel] += frames.shape[1]
        # Only legs with a candidate block now, or a digit pending from before, need their state machine run.
        rows = np.flatnonzero(verdicts.max(axis=1) >= 0).tolist()
        if self._busy:
            rows = sorted(set(rows).union(i for i, s in enumerate(slot_list) if s in self._busy))
        if not rows:
            return []
        p = self.params
        out: list[tuple[int, int, ToneEvent]] = []
        for i in rows:
            slot = slot_list[i]
            track = self._tracks[slot]
            b = int(base[i])
            for j, d in enumerate(verdicts[i].tolist()):
                ev = track.step(d, b + j * HOP, p.on_blocks, p.off_blocks)
                if ev is not None:
                    out.append((j, i, ev))
            if track.busy:
                self._busy.add(slot)
            else:
                self._busy.discard(slot)
        out.sort(key=lambda t: t[0])
        return [(leg_ids[i], ev) for _, i, ev in out]

    def classify(self, leg_ids: Sequence[Hashable], frames: np.ndarray) -> np.ndarray:
        """Per-block verdicts without the state machine: (legs, blocks) of digit index into DIGITS, or -1.

        For a gate that mutes tones while they sound (a block passes about 15 ms into a tone), and for tests.
        It advances the legs' audio history: use a bank for `classify` or for `feed`, not both.
        """
        frames = np.asarray(frames)
        if frames.ndim != 2 or frames.shape[0] != len(leg_ids) or frames.shape[1] % HOP:
            raise ValueError(f"frames must have shape (len(leg_ids), k * {HOP}); got {frames.shape}")
        sel = np.asarray([self._slot(leg) for leg in leg_ids], dtype=np.int64)
        return self._classify(sel, frames)

    def _classify(self, sel: slice | np.ndarray, frames: np.ndarray) -> np.ndarray:
        """Classify every block ending in this tick, vectorised over legs and blocks."""
        p = self.params
        n, m = frames.shape[0], frames.shape[1] // HOP
        full = np.concatenate([self._hist[sel], frames], axis=1, dtype=np.float32)
        self._hist[sel] = full[:, m * HOP :]
        basis, weights = _tick_basis(m)
        proj = (full @ basis).reshape(n, m, 16)  # (real, imaginary) of the eight bins, per block
        energy = (full * full) @ weights  # (n, m)
        sq = proj * proj
        power = sq[..., 0::2] + sq[..., 1::2]
        # Cheap necessary conditions first: the strongest tone of each group, restored by the most the window
        # can take from an accepted tone, must reach the level floor and the share of the block's energy.
        top = np.maximum(
            np.maximum(power[..., 0::4], power[..., 1::4]), np.maximum(power[..., 2::4], power[..., 3::4])
        )
        pair = top[..., 0] + top[..., 1]
        g = self._min_gain
        maybe = pair >= np.maximum(energy * (p.min_energy_fraction * g), 2.0 * g * self._min_power)
        verdict = np.full((n, m), -1, dtype=np.int64)
        idx = np.flatnonzero(maybe)
        if idx.size:
            prev = np.concatenate([self._prev[sel][:, None, :], proj[:, :-1]], axis=1).reshape(-1, 16)[idx]
            ok, digit = self._decide(
                power.reshape(-1, 8)[idx], proj.reshape(-1, 16)[idx], prev, energy.reshape(-1)[idx]
            )
            verdict.reshape(-1)[idx[ok]] = digit[ok]
        self._prev[sel] = proj[:, -1]
        return verdict

    def _decide(
        self, power: np.ndarray, proj: np.ndarray, prev: np.ndarray, energy: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """The full tests on k candidate blocks: returns (passed, digit index), each of shape (k,)."""
        p = self.params
        k = len(power)
        groups = power.reshape(k, 2, 4)
        tone = groups.argmax(axis=2)  # (k, 2): row and column of the strongest tone of each group
        ranked = np.sort(groups, axis=2)
        peak, second = ranked[..., 3], ranked[..., 2]
        bins = tone + _GROUP_BASE
        # Phase vocoder: the bin's phase advance over one hop, less the nominal advance, is the deviation.
        turn = proj.view(np.complex64) * prev.view(np.complex64).conj() * _HOP_ROTATION
        residual = np.abs(np.angle(turn[np.arange(k)[:, None], bins]))
        dev = residual * _DEV_PER_RADIAN[bins]
        # Undo the window's loss on an off-centre tone so that level, twist and share are the tone's own.
        level = peak / np.interp(residual, _GAIN_GRID, _GAIN)
        twist = level[:, 1] / level[:, 0]
        ok = level.min(axis=1) >= self._min_power
        ok &= (twist >= self._normal_twist) & (twist <= self._reverse_twist)
        ok &= dev.max(axis=1) <= p.max_deviation
        ok &= (second <= peak * self._second).all(axis=1)
        ok &= level.sum(axis=1) >= p.min_energy_fraction * energy
        return ok, 4 * tone[:, 0] + tone[:, 1]


class DtmfDetector:
    """One leg's streaming detector: feed frames of any length, get the digits that ended in them."""

    def __init__(self, params: DtmfParams | None = None) -> None:
        self._bank = DtmfDetectorBank(params)
        self._pending = np.zeros(0, dtype=np.int16)
        self._fed = 0

    @property
    def position(self) -> int:
        """Samples fed so far."""
        return self._fed

    def feed_events(self, frame: np.ndarray) -> list[ToneEvent]:
        """Feed int16 samples; returns the key presses that ended within them, with their times."""
        a = np.asarray(frame)
        if a.ndim != 1:
            raise ValueError(f"a frame is one-dimensional; got shape {a.shape}")
        self._fed += len(a)
        if self._pending.size:
            a = np.concatenate([self._pending, a])
        whole = len(a) - len(a) % HOP
        self._pending = a[whole:]
        if whole == 0:
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
