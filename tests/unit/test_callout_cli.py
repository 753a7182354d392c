"""A callout's `cli` goes into the INVITE's From header: control characters in it are a 400 naming the
field, not a 500 when the SIP message is serialised (found by bench/api_fuzz.py)."""

from __future__ import annotations

import pytest

from tonebridge.api.callouts import parse_callout_request
from tonebridge.api.errors import INVALID_PARAMETER, ApiError

DESTINATION = {"destination": {"type": "sip", "endpoint": "sip:bob@127.0.0.1:5070"}}


@pytest.mark.parametrize("cli", ["x\ry", "+1555\n", "a\x00b", "\x7f"])
@pytest.mark.parametrize("where", ["envelope", "params"])
def test_control_characters_in_cli_are_refused(cli: str, where: str) -> None:
    body = {"method": "customCallout", "customCallout": dict(DESTINATION)}
    (body if where == "envelope" else body["customCallout"])["cli"] = cli
    with pytest.raises(ApiError) as caught:
        parse_callout_request(body)
    assert caught.value.error_code == INVALID_PARAMETER and caught.value.message.startswith("cli:")


def test_a_plain_cli_is_kept() -> None:
    body = {"method": "customCallout", "cli": "+15550000000 Bob", "customCallout": dict(DESTINATION)}
    assert parse_callout_request(body).cli == "+15550000000 Bob"
