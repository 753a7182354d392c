"""A repeated digit from a sender that repeats identical RFC 4733 packets: SIPp plays the same recorded pcap
for both presses of 1, and the application must still get every press in its PIE."""

from __future__ import annotations

from pathlib import Path

import pytest
from sinch_app import app_config, sdk, signed
from sipp import start_uas

pytestmark = pytest.mark.integration


def test_detect_collects_a_digit_repeated_with_identical_packets(
    in_process_server, backend, tmp_path: Path
) -> None:
    (tmp_path / "pcap").symlink_to("/usr/share/sip-tester")
    uas, uas_port, _ = start_uas(tmp_path, scenario="uas_answer_press_112.xml", echo=False, calls=1)
    server = in_process_server(app_config(backend, uas_port))
    client = sdk(server)

    # maxDigits 3 ends the collection on the third press; the 700 ms between presses is far inside the
    # inter-digit timeout, so a lost press shows up as "12" after the timeout, not as a slow "112".
    call_id = client.voice.callouts.conference(
        destination={"type": "number", "endpoint": "+15559990000"},
        conference_id="repeats",
        cli="+15550000000",
        conference_dtmf_options={"mode": "detect", "max_digits": 3, "timeout_mills": 3000},
        enable_dice=True,
    ).call_id
    backend.wait(lambda: len(backend.events("pie", call_id)) == 1)
    pie = backend.events("pie", call_id)[0]
    assert pie["menuResult"] == {
        "menuId": "repeats",
        "type": "sequence",
        "value": "112",
        "inputMethod": "dtmf",
    }

    status, _ = signed(server, "DELETE", f"/calling/v1/conferences/id/repeats/{call_id}")
    assert status == 200
    backend.wait(lambda: len(backend.events("dice", call_id)) == 1)
    assert len(backend.events("pie", call_id)) == 1 and backend.bad_signatures == 0
    uas.wait_exit(10)
