"""The in-band gates (calls/conferencing.py): every gated leg's three-frame delay line, vectorised. A tone
frame blanks itself, the frames still in the line before it and two after it; legs never disturb each
other; suppression blanks everything while it lasts."""

from __future__ import annotations

import numpy as np

from tonebridge.calls.conferencing import InbandGates


def _frame(value: int) -> np.ndarray:
    return np.full(160, value, dtype=np.int16)


def _run(gates: InbandGates, tones: dict[str, set[int]], pushes: int) -> dict[str, list[int]]:
    """Push frame i (every sample = i + 1) on every leg; returns what came out, as those values (0 blank)."""
    heard: dict[str, list[int]] = {call_id: [] for call_id in gates.ids}
    for i in range(pushes):
        frames = np.stack([_frame(i + 1) for _ in gates.ids])
        tone = np.array([i in tones.get(call_id, set()) for call_id in gates.ids])
        out = gates.push(frames, tone)
        for call_id, row in zip(gates.ids, out, strict=True):
            assert (row == row[0]).all()
            heard[call_id].append(int(row[0]))
    return heard


def test_a_tone_blanks_the_line_before_it_and_two_frames_after() -> None:
    gates = InbandGates(delay=3)
    gates.add("a")
    gates.add("b")
    heard = _run(gates, {"a": {5}}, 12)
    # Frame i leaves three pushes later; the tone at 5 blanks 2, 3, 4 (in the line), 5, and 6, 7 (hangover).
    assert heard["a"] == [0, 0, 0, 1, 2, 0, 0, 0, 0, 0, 0, 9]
    assert heard["b"] == [0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9]


def test_suppression_blanks_while_it_lasts() -> None:
    gates = InbandGates(delay=3)
    gates.add("a")
    gates.set_suppressing("a", True)
    assert _run(gates, {}, 6)["a"] == [0] * 6
    gates.set_suppressing("a", False)
    # The frames pushed while suppressed are still in the line, blanked; two more after by hangover.
    after = _run(gates, {}, 8)["a"]
    assert after[:5] == [0] * 5 and after[5:] == [3, 4, 5]


def test_removing_a_leg_keeps_the_others_lines() -> None:
    gates = InbandGates(delay=3)
    for call_id in ("a", "b", "c"):
        gates.add(call_id)
    _run(gates, {}, 2)
    gates.remove("b")
    assert gates.ids == ["a", "c"] and "b" not in gates
    heard = _run(gates, {}, 3)
    # The line of each remaining leg goes on where it was: its last initial silence, then frames 1 and 2.
    assert heard == {"a": [0, 1, 2], "c": [0, 1, 2]}
    gates.add("b")  # a fresh line: silence first
    assert _run(gates, {}, 1)["b"] == [0]
