"""The sixteen DTMF keys, the one digit set every layer uses: in RFC 4733 event-code order (§3.2, events
0-15), the keys of ITU-T Q.23 Table 1."""

from __future__ import annotations

DTMF_KEYS = "0123456789*#ABCD"
