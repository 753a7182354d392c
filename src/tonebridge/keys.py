"""DTMF keys, the one vocabulary every layer uses for them: the sixteen keys, in RFC 4733 event-code order
(§3.2, events 0-15, the keys of ITU-T Q.23 Table 1), and where a key press was found."""

from __future__ import annotations

from enum import StrEnum

DTMF_KEYS = "0123456789*#ABCD"


class PressSource(StrEnum):
    """Where a key press was found (conference-dtmf.md §2)."""

    RFC4733 = "rfc4733"
    INFO = "info"
    INBAND = "inband"
