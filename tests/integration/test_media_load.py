"""Under load, the media plane still carries a known voice at its level and a caller's keys to the
application (issue 10): 200 SIPp legs stream speech-like audio into rooms of 10, while in a room of their own
a SIPp leg sends a steady tone and a probe phone records what it hears and presses 1234. Every call comes in
through a Sinch application whose real backend answers each ICE with connectConf (detect mode). CI-sized,
with no timing assertion: only what was heard, what the application received, and that nothing leaked."""

from __future__ import annotations

import itertools
import json
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from audio import RATE, amplitude_for_dbm0, dominant_frequency, level_dbm0, read_wav
from backend import Backend
from harness import (
    HOST,
    Process,
    ServerHandle,
    free_port,
    free_port_range,
    phone,
    tonebridge_command,
    write_config,
)
from scipy.signal import lfilter
from sinch_app import NUMBER, app_config, signed
from sipp import SippStats, run_uac

pytestmark = pytest.mark.integration

LOAD_LEGS = 200
ROOM_SIZE = 10
TONE_HZ = 1000.0
TONE_DBM0 = -20.0
TONE_ROOM = "tone"
DETECT = {"mode": "detect", "maxDigits": 4, "timeoutMills": 3000}

# A caller that streams a raw mu-law file in a loop (SIPp's rtp_stream) until the server hangs up.
SCENARIO = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="streaming caller">
  <send retrans="500">
    <![CDATA[
      INVITE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: FROM_USER <sip:FROM_USER@[local_ip]:[local_port]>;tag=[pid]S[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>
      Call-ID: [call_id]
      CSeq: 1 INVITE
      Contact: <sip:FROM_USER@[local_ip]:[local_port];transport=[transport]>
      Max-Forwards: 70
      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=FROM_USER 1 1 IN IP[local_ip_type] [local_ip]
      s=-
      c=IN IP[media_ip_type] [media_ip]
      t=0 0
      m=audio [rtpstream_audio_port] RTP/AVP 0 101
      a=rtpmap:0 PCMU/8000
      a=rtpmap:101 telephone-event/8000
      a=fmtp:101 0-16
      a=ptime:20
      a=sendrecv

    ]]>
  </send>
  <recv response="100" optional="true"/>
  <recv response="180" optional="true"/>
  <recv response="183" optional="true"/>
  <recv response="200"/>
  <send>
    <![CDATA[
      ACK sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: FROM_USER <sip:FROM_USER@[local_ip]:[local_port]>;tag=[pid]S[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 1 ACK
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
  <nop><action><exec rtp_stream="AUDIO_FILE,-1,0"/></action></nop>
  <recv request="BYE"/>
  <send>
    <![CDATA[
      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:]
      [last_Call-ID:]
      [last_CSeq:]
      Content-Length: 0

    ]]>
  </send>
</scenario>
"""


def ulaw_encode(samples: np.ndarray) -> bytes:
    """16-bit PCM to G.711 mu-law, written out from the standard (14-bit magnitude plus a bias of 33,
    eight segments of 16 steps, all bits inverted), not the server's codec."""
    x = samples.astype(np.int32) >> 2
    negative = x < 0
    magnitude = np.minimum(np.where(negative, -x, x), 8158) + 33  # at most 0x1FFF: the top segment
    segment_ends = np.array([0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF])
    segment = np.searchsorted(segment_ends, magnitude)
    code = (segment << 4) | ((magnitude >> (segment + 1)) & 0x0F)
    return (code ^ np.where(negative, 0x7F, 0xFF)).astype(np.uint8).tobytes()


def tone_ulaw(seconds: int = 1) -> bytes:
    """A steady sine at TONE_HZ and TONE_DBM0; whole periods, so SIPp's loop of it is seamless."""
    n = np.arange(seconds * RATE)
    return ulaw_encode(np.rint(amplitude_for_dbm0(TONE_DBM0) * np.sin(2 * np.pi * TONE_HZ * n / RATE)))


def speech_like_ulaw(seconds: int = 4) -> bytes:
    """Low-passed noise in 4 Hz syllables, about -20 dBm0 while talking: what a room of talkers sends."""
    rng = np.random.default_rng(10)
    n = np.arange(seconds * RATE)
    noise = lfilter([0.35], [1.0, -0.65], rng.standard_normal(n.size))
    syllables = np.clip(np.sin(2 * np.pi * 4.0 * n / RATE), 0.0, None)
    speech = noise / noise.std() * syllables * amplitude_for_dbm0(-20.0) / np.sqrt(2)
    return ulaw_encode(np.clip(np.rint(speech), -32768, 32767))


def metrics(server: ServerHandle) -> dict:
    url = f"http://{HOST}:{server.http_port}/tonebridge/v1/metrics"
    with urllib.request.urlopen(url, timeout=10) as reply:
        return json.loads(reply.read())


def wait_metrics(server: ServerHandle, what: str, predicate: Callable[[dict], bool], timeout: float) -> None:
    """Poll the server's metrics until `predicate` holds; fail with the last document after `timeout`."""
    deadline = time.monotonic() + timeout
    while not predicate(document := metrics(server)):
        if time.monotonic() > deadline:
            summary = {k: document.get(k) for k in ("calls", "conferences", "media")}
            raise AssertionError(f"{what}: not within {timeout} s; metrics: {summary}")
        time.sleep(0.2)  # the poll's interval; the deadline above bounds the wait


class Caller(threading.Thread):
    """SIPp placing `calls` streaming calls in the background; `stats` once it has exited."""

    def __init__(self, workdir: Path, server: ServerHandle, user: str, audio: bytes, calls: int) -> None:
        super().__init__(daemon=True)
        self.workdir = workdir / user
        self.workdir.mkdir()
        (self.workdir / "audio.ulaw").write_bytes(audio)
        self.scenario = self.workdir / "caller.xml"
        self.scenario.write_text(
            SCENARIO.replace("FROM_USER", user).replace("AUDIO_FILE", str(self.workdir / "audio.ulaw"))
        )
        self.target = server.sip_uri_host
        self.calls = calls
        self.stats: SippStats | None = None
        self.error: BaseException | None = None
        self.start()

    def run(self) -> None:
        try:
            self.stats = run_uac(
                self.workdir,
                self.target,
                scenario=str(self.scenario),
                calls=self.calls,
                rate=100.0,
                service=NUMBER,
                timeout=120.0,
            )
        except BaseException as exc:  # reported by the test thread
            self.error = exc

    def result(self, timeout: float) -> SippStats:
        self.join(timeout)
        assert not self.is_alive(), f"sipp ({self.workdir.name}) still running after {timeout} s"
        assert self.error is None, repr(self.error)
        assert self.stats is not None
        return self.stats


@pytest.fixture
def load_server(tmp_path: Path, backend: Backend) -> Iterator[ServerHandle]:
    """`tonebridge serve` with the Sinch application of sinch_app.py and RTP ports for every leg."""
    sip_port, http_port = free_port(), free_port()
    config = tmp_path / "tonebridge.toml"
    # Two ports per leg, with room for ports that others hold in the range.
    # The load's 200 callers come from one source faster than the default per-source admission allows.
    limits = "\n[limits]\ninvites_per_second_per_source = 1000\ninvite_burst_per_source = 1000\n"
    write_config(
        config, sip_port, http_port, free_port_range(3 * (LOAD_LEGS + 10)), app_config(backend) + limits
    )
    process = Process([*tonebridge_command(), "serve", "--config", str(config)], name="tonebridge")
    process.wait_for(r"event=listening", timeout=20)
    yield ServerHandle(process, sip_port, http_port, config)
    code = process.stop()
    assert code == 0, f"server exited {code}:\n{process.output[-3000:]}"
    assert "Traceback" not in process.output, process.output[-5000:]


def test_under_load_a_probe_hears_the_sender_at_its_level_and_its_keys_reach_the_pie(
    load_server: ServerHandle, backend: Backend, tmp_path: Path
) -> None:
    rooms: set[str] = set()
    load_joined = itertools.count()
    lock = threading.Lock()

    def ice(event: dict) -> dict:
        with lock:
            room = (
                TONE_ROOM if event["cli"] in ("sender", "probe") else f"load-{next(load_joined) // ROOM_SIZE}"
            )
            rooms.add(room)
        return {"action": {"name": "connectConf", "conferenceId": room, "conferenceDtmfOptions": DETECT}}

    backend.answers["ice"] = ice
    sender = Caller(tmp_path, load_server, "sender", tone_ulaw(), calls=1)
    load = Caller(tmp_path, load_server, "load", speech_like_ulaw(), calls=LOAD_LEGS)
    wait_metrics(
        load_server,
        "the sender and every load leg in their rooms",
        lambda m: m["conferences"]["participants"] == LOAD_LEGS + 1,
        timeout=60,
    )

    wav = tmp_path / "probe.wav"
    probe: Process = phone(
        "dial",
        f"sip:{NUMBER}@{load_server.sip_uri_host}",
        "--from-user",
        "probe",
        "--record",
        str(wav),
        stdin=True,
    )
    try:
        start = probe_heard_tone_then_pressed(load_server, backend, probe)
        # The application ends every call: the server sends each BYE.
        for room in sorted(rooms):
            status, answer = signed(
                SimpleNamespace(server=load_server), "DELETE", f"/calling/v1/conferences/id/{room}"
            )
            assert status == 200, (room, status, answer)
        probe.wait_for(r"event=recorded", timeout=30)
        assert probe.wait_exit(15) == 0
    finally:
        if probe.proc.poll() is None:
            probe.stop()

    samples, rate = read_wav(wav)
    window = samples[start * rate : (start + 2) * rate]
    assert window.size == 2 * rate
    assert abs(level_dbm0(window) - TONE_DBM0) <= 1.5, level_dbm0(window)
    assert abs(dominant_frequency(window, rate) - TONE_HZ) <= 5.0, dominant_frequency(window, rate)

    load_stats, sender_stats = load.result(timeout=90), sender.result(timeout=30)
    assert (load_stats.successful, load_stats.failed) == (LOAD_LEGS, 0), load_stats.output[-3000:]
    assert (sender_stats.successful, sender_stats.failed) == (1, 0), sender_stats.output[-3000:]
    wait_metrics(
        load_server,
        "no leg and no participant left",
        lambda m: m["media"]["legs"] == 0 and m["conferences"]["participants"] == 0,
        timeout=30,
    )
    assert backend.bad_signatures == 0


def probe_heard_tone_then_pressed(server: ServerHandle, backend: Backend, probe: Process) -> int:
    """Wait until the probe is in the sender's room and has heard two whole seconds more, then press 1234
    and wait for that collection's PIE. Returns the first of the two seconds (an index into its recording)."""
    probe.wait_for(r"event=answered", timeout=20)
    wait_metrics(
        server,
        "the probe in the sender's room",
        lambda m: m["conferences"]["participants"] == LOAD_LEGS + 2,
        timeout=20,
    )
    # Two whole seconds heard from now on, with the sender in the mix and the load up.
    heard = probe.matches(r"event=heard .*seconds=(\d+)")
    start = (int(heard[-1].group(1)) if heard else 0) + 1
    probe.wait_for(rf"event=heard .*seconds={start + 2}\b", timeout=30)

    probe.send("dtmf 1234")
    probe.wait_for(r"event=dtmf_sent", timeout=15)
    (probe_ice,) = [e for e in backend.events("ice") if e["cli"] == "probe"]
    probe_call = probe_ice["callid"]
    backend.wait(lambda: len(backend.events("pie", probe_call)) >= 1, timeout=20)
    assert [e["menuResult"]["value"] for e in backend.events("pie", probe_call)] == ["1234"]
    return start
