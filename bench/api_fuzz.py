"""HTTP API fuzzing: schemathesis over the OpenAPI document `tonebridge serve` publishes, much longer than
the CI run (tests/integration/test_sinch_api.py), every request signed as a Sinch application signs it.

Starts the server on free ports with one application, loads `/tonebridge/v1/openapi.json` and, round after
round, draws `--examples` cases per operation in each of schemathesis' two generation modes (positive:
valid by the schema; negative: violating it), sends each with an `Authorization: Application key:signature`
header (the signing formula written out here, not the server's code) and classifies the answer. A round
uses a new seed; rounds go on until `--seconds` have passed (one round at least). The event stream
(`/tonebridge/v1/events`) is left out: it answers a never-ending stream, not a document.

Checks: no 5xx at all, and every 4xx in the Sinch error format (`errorCode` whose first three digits are
the status, `message`, `reference`). Prints cases, statuses and the first offending cases; exits 1 when
anything is wrong. Never run as a test.

    .venv/bin/python bench/api_fuzz.py                        # one round of 200 examples per operation
    .venv/bin/python bench/api_fuzz.py --examples 300 --seconds 300
"""

from __future__ import annotations

import argparse
import base64
import collections
import hashlib
import hmac
import json
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import seed as hypothesis_seed
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

HOST = "127.0.0.1"
KEY = "fuzz-app-0001"
SECRET = base64.b64encode(b"fuzzing-secret").decode()
EXCLUDED = ("/tonebridge/v1/events",)


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def start_server(workdir: Path) -> tuple[subprocess.Popen[bytes], str]:
    http = free_port()
    config = workdir / "fuzz.toml"
    config.write_text(
        f'[server]\nsip = "{HOST}:{free_port()}"\nhttp = "{HOST}:{http}"\nrtp_ports = [40000, 40999]\n'
        f'data_dir = "{workdir / "data"}"\n\n'
        f'[[applications]]\nkey = "{KEY}"\nsecret = "{SECRET}"\nnumbers = ["+15550009999"]\n',
        encoding="utf-8",
    )
    tonebridge = Path(sys.executable).parent / "tonebridge"
    log = (workdir / "server.log").open("wb")
    proc = subprocess.Popen([str(tonebridge), "serve", "--config", str(config)], stdout=log, stderr=log)
    base = f"http://{HOST}:{http}"
    deadline = time.monotonic() + 20
    while True:
        try:
            with urllib.request.urlopen(f"{base}/tonebridge/v1/health", timeout=1):
                return proc, base
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the server did not start; see {workdir / 'server.log'}") from None
            time.sleep(0.1)


class SinchSigning(requests.auth.AuthBase):
    """Signs the prepared request: METHOD, Content-MD5, Content-Type, x-timestamp and the path as sent."""

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        body = request.body or b""
        if isinstance(body, str):
            body = body.encode()
        content_type = request.headers.get("Content-Type", "")
        md5 = base64.b64encode(hashlib.md5(body).digest()).decode() if body else ""
        timestamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        path = (request.path_url or "/").partition("?")[0]
        text = f"{request.method}\n{md5}\n{content_type}\nx-timestamp:{timestamp}\n{path}"
        digest = hmac.new(base64.b64decode(SECRET), text.encode(), hashlib.sha256).digest()
        request.headers["x-timestamp"] = timestamp
        request.headers["Authorization"] = f"Application {KEY}:{base64.b64encode(digest).decode()}"
        return request


def sinch_error(status: int, raw: bytes) -> bool:
    try:
        body = json.loads(raw)
    except ValueError:
        return False
    return (
        isinstance(body, dict)
        and isinstance(body.get("errorCode"), int)
        and body["errorCode"] // 100 == status
        and isinstance(body.get("message"), str)
        and isinstance(body.get("reference"), str)
    )


class Tally:
    def __init__(self) -> None:
        self.cases = 0
        self.statuses: collections.Counter[int] = collections.Counter()
        self.per_operation: collections.Counter[str] = collections.Counter()
        self.server_errors: list[str] = []
        self.wrong_format: list[str] = []
        self.transport_errors: list[str] = []
        self.unsatisfiable: set[str] = set()

    def record(self, label: str, case: Any, response: requests.Response) -> None:
        self.cases += 1
        self.per_operation[label] += 1
        self.statuses[response.status_code] += 1
        what = (
            f"{case.method.upper()} {response.request.path_url} -> {response.status_code} "
            f"{response.content[:300]!r} (body sent: {str(response.request.body)[:300]})"
        )
        if response.status_code >= 500:
            self.server_errors.append(what)
        elif response.status_code >= 400 and not sinch_error(response.status_code, response.content):
            self.wrong_format.append(what)


def run_operation(
    operation: Any, mode: GenerationMode, examples: int, seed: int, base: str, tally: Tally
) -> None:
    session = requests.Session()
    session.auth = SinchSigning()
    label = f"{operation.method.upper()} {operation.path}"

    @hypothesis_seed(seed)
    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def test(case: Any) -> None:
        try:
            response = case.call(base_url=base, session=session, timeout=10)
        except requests.RequestException as exc:
            tally.transport_errors.append(f"{label}: {exc!r}")
            return
        tally.record(label, case, response)

    try:
        test()
    except Unsatisfiable:
        # Nothing to violate (negative mode on an operation without parameters or body).
        tally.unsatisfiable.add(f"{label} ({mode.value})")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--examples", type=int, default=200, help="examples per operation and mode, per round"
    )
    parser.add_argument("--seconds", type=float, default=0, help="keep running rounds this long")
    parser.add_argument("--seed", type=int, default=1, help="seed of the first round (then +1 each round)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="tonebridge-fuzz-") as tmp:
        proc, base = start_server(Path(tmp))
        try:
            schema = schemathesis.openapi.from_url(f"{base}/tonebridge/v1/openapi.json")
            operations = [
                result.ok()
                for result in schema.get_all_operations()
                if not result.ok().path.startswith(EXCLUDED)
            ]
            print(f"{len(operations)} operations at {base}; examples per operation and mode: {args.examples}")
            tally, started, rounds = Tally(), time.monotonic(), 0
            while rounds == 0 or time.monotonic() - started < args.seconds:
                for operation in operations:
                    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                        run_operation(operation, mode, args.examples, args.seed + rounds, base, tally)
                rounds += 1
                print(
                    f"round {rounds}: {tally.cases} cases, {len(tally.server_errors)} 5xx, "
                    f"{len(tally.wrong_format)} non-Sinch 4xx, {time.monotonic() - started:.0f} s",
                    flush=True,
                )
            alive = proc.poll() is None
        finally:
            proc.terminate()
            proc.wait(10)
        elapsed = time.monotonic() - started
        print(f"\noperations: {len(operations)}, rounds: {rounds}, seconds: {elapsed:.0f}")
        for label, count in sorted(tally.per_operation.items()):
            print(f"  {count:7d}  {label}")
        print("statuses: " + ", ".join(f"{s}: {n}" for s, n in sorted(tally.statuses.items())))
        print(f"cases: {tally.cases}")
        print(f"5xx: {len(tally.server_errors)}")
        print(f"4xx not in the Sinch error format: {len(tally.wrong_format)}")
        print(f"transport errors: {len(tally.transport_errors)}")
        print(f"server alive at the end: {alive}")
        for label in sorted(tally.unsatisfiable):
            print(f"no cases to generate: {label}")
        for title, items in (
            ("5xx", tally.server_errors),
            ("non-Sinch 4xx", tally.wrong_format),
            ("transport errors", tally.transport_errors),
        ):
            for item in items[:10]:
                print(f"{title}: {item}")
        if tally.server_errors or not alive:
            errors = [line for line in (Path(tmp) / "server.log").read_text().splitlines() if "ERROR" in line]
            print("server log errors:", *errors[:20], sep="\n  ")
        clean = alive and not (tally.server_errors or tally.wrong_format or tally.transport_errors)
        return 0 if clean else 1


if __name__ == "__main__":
    sys.exit(main())
