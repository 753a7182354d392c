"""Every command of docs/quickstart.md, run as the page shows it.

The commands are the `$ ` lines of the page's ```` ```console ```` blocks. Each one must be known here, so
a command added to the page without a test to run it fails `test_every_command_is_known`. The server, the
softphone's call and both `curl` commands run for real on the documented default ports (127.0.0.1:5060 and
:8080), skipped when something else holds them. `make run` and `make test` are not run (`make test` would
run this test again): the Makefile is read instead, its `run` target must be exactly the page's server
command and its `test` target must run pytest.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from harness import HOST, ROOT, Process

QUICKSTART = ROOT / "docs" / "quickstart.md"
MAKEFILE = ROOT / "Makefile"
SIP_PORT, HTTP_PORT = 5060, 8080

# What each kind of command on the page looks like; `kind_of` gives every command exactly one.
KINDS = {
    "make-run": re.compile(r"^make run$"),
    "make-test": re.compile(r"^make test$"),
    "serve": re.compile(r"^\S*tonebridge serve$"),
    "dial": re.compile(r"^\S*tonebridge phone dial sip:\S+ .*--dtmf \S+"),
    "events": re.compile(r"^curl -N \S+/tonebridge/v1/events$"),
    "metrics": re.compile(r"^curl \S+/tonebridge/v1/metrics$"),
}


def console_commands(markdown: str) -> list[str]:
    """The `$ ` lines of every ```console block, in page order (a trailing `\\` continues a line)."""
    commands: list[str] = []
    fence: str | None = None
    pending = ""
    for raw in markdown.splitlines():
        line = raw.strip()
        if fence is None:
            if match := re.match(r"^(`{3,}|~{3,})\s*console\b", line):
                fence = match.group(1)
            continue
        if line.startswith(fence):
            fence = None
            continue
        if pending:
            pending += " " + line.removesuffix("\\").strip()
        elif line.startswith("$ "):
            pending = line[2:].removesuffix("\\").strip()
        else:
            continue  # output shown in the block, not a command
        if not line.endswith("\\"):
            commands.append(pending)
            pending = ""
    return commands


def kind_of(command: str) -> str:
    kinds = [name for name, pattern in KINDS.items() if pattern.search(command)]
    assert len(kinds) == 1, (
        f"docs/quickstart.md shows `{command}`, which tests/integration/test_quickstart.py does not know "
        "how to run: every command of the quick start must be run by a test"
    )
    return kinds[0]


def page_commands() -> dict[str, str]:
    commands = console_commands(QUICKSTART.read_text(encoding="utf-8"))
    by_kind: dict[str, str] = {}
    for command in commands:
        kind = kind_of(command)
        assert kind not in by_kind, (
            f"docs/quickstart.md shows two {kind} commands: {by_kind[kind]!r}, {command!r}"
        )
        by_kind[kind] = command
    missing = set(KINDS) - set(by_kind)
    assert not missing, f"docs/quickstart.md no longer shows these steps: {sorted(missing)}"
    return by_kind


def make_variables(makefile: str) -> dict[str, str]:
    variables = {}
    for line in makefile.splitlines():
        if match := re.match(r"^([A-Za-z_][A-Za-z0-9_]*)\s*(?:\?|:)?=\s*(.*?)\s*$", line):
            variables.setdefault(match.group(1), match.group(2))
    return variables


def expand(text: str, variables: dict[str, str]) -> str:
    for _ in range(10):
        text = re.sub(
            r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: variables.get(m.group(1), m.group(0)), text
        )
    return text


def make_recipe(target: str) -> list[str]:
    """The recipe lines of `target` in the Makefile, with its simple variables expanded."""
    text = MAKEFILE.read_text(encoding="utf-8")
    variables = make_variables(text)
    lines = text.splitlines()
    for index, line in enumerate(lines):
        if re.match(rf"^{re.escape(target)}\s*:(?!=)", line):
            recipe = []
            for body in lines[index + 1 :]:
                if not body.startswith("\t"):
                    break
                recipe.append(expand(body.strip(), variables))
            return recipe
    raise AssertionError(f"the Makefile has no {target!r} target")


def argv(command: str) -> list[str]:
    """The command as a program and its arguments; the page's `.venv/bin/...` is the repository's venv."""
    args = shlex.split(command)
    program = args[0]
    if program.startswith(".venv/bin/"):
        local = ROOT / program
        args[0] = str(local if local.exists() else Path(sys.executable).parent / Path(program).name)
    else:
        found = shutil.which(program)
        if found is None:
            pytest.skip(f"`{program}` is not installed, and the quick start runs `{command}`")
        args[0] = found
    return args


def taken(port: int, kind: socket.SocketKind) -> bool:
    with socket.socket(socket.AF_INET, kind) as sock:
        if kind == socket.SOCK_STREAM:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server binds
        try:
            sock.bind((HOST, port))
        except OSError:
            return True
    return False


def test_every_command_is_known() -> None:
    commands = page_commands()
    assert commands["serve"] == ".venv/bin/tonebridge serve"


def test_make_run_is_the_server_command() -> None:
    """`make run` is not run here: its recipe must be exactly the server command the page shows."""
    commands = page_commands()
    assert make_recipe("run") == [commands["serve"]]


def test_make_test_runs_pytest() -> None:
    """`make test` is not run here (it runs this test): it must run pytest from the venv."""
    recipe = make_recipe("test")
    assert any(line.split()[0] == ".venv/bin/pytest" for line in recipe if line), recipe


@pytest.fixture
def processes() -> Iterator[list[Process]]:
    started: list[Process] = []
    yield started
    for process in reversed(started):
        if process.proc.poll() is None:
            process.proc.kill()
            process.proc.wait(10)


@pytest.mark.integration
def test_quickstart_commands_run(tmp_path: Path, processes: list[Process]) -> None:
    commands = page_commands()
    busy = [
        f"{HOST}:{port}/{name}"
        for port, kind, name in (
            (SIP_PORT, socket.SOCK_DGRAM, "udp"),
            (SIP_PORT, socket.SOCK_STREAM, "tcp"),
            (HTTP_PORT, socket.SOCK_STREAM, "tcp"),
        )
        if taken(port, kind)
    ]
    if busy:
        pytest.skip(f"the quick start runs on the default ports, in use here: {', '.join(busy)}")

    # Step 1: the server, in a scratch directory so that its ./data is the test's.
    server = Process(argv(commands["serve"]), cwd=tmp_path, name="tonebridge serve")
    processes.append(server)
    try:
        listening = server.wait_for(r"event=listening.*", timeout=30).group(0)
    except AssertionError:
        if "in use" in server.output:
            pytest.skip(f"the default ports were taken while the server started:\n{server.output[-1000:]}")
        raise
    assert f"sip_udp={HOST}:{SIP_PORT}" in listening and f"http=http://{HOST}:{HTTP_PORT}" in listening
    assert "mode=demo" in listening

    # Step 2: the event stream; its opening comment says the subscription is in place. curl's progress
    # meter (on stderr, as stdout is no terminal) shares the output, so lines are matched unanchored.
    events = Process(argv(commands["events"]), cwd=tmp_path, name="curl -N events")
    processes.append(events)
    events.wait_for(r": tonebridge event stream", timeout=10)

    # Step 3: the softphone's call, answered; its digits reach the demo's collection.
    dial_args = argv(commands["dial"])
    assert "--hangup-after" in dial_args, "the quick start's call must end by itself (--hangup-after)"
    digits = dial_args[dial_args.index("--dtmf") + 1]
    hangup_after = float(dial_args[dial_args.index("--hangup-after") + 1])
    phone = Process(dial_args, cwd=tmp_path, name="tonebridge phone dial")
    processes.append(phone)
    phone.wait_for(r"event=answered", timeout=15)
    phone.wait_for(rf"event=dtmf_sent .*digits={re.escape(digits)}\b", timeout=15)
    pie = server.wait_for(r"demo: PIE call=\w+ conference=demo menuResult=(\{.*\})", timeout=15)
    assert json.loads(pie.group(1)) == {
        "menuId": "demo",
        "type": "sequence",
        "value": digits,
        "inputMethod": "dtmf",
    }
    first = events.wait_for(r"data: (\{.*\})$", timeout=10)
    assert json.loads(first.group(1))["conferenceId"] == "demo"
    events.stop()
    phone.wait_for(r"event=ended .*result=ANSWERED", timeout=hangup_after + 15)
    assert phone.wait_exit(15) == 0, phone.output

    # Step 4: the metrics, with the collection counted.
    metrics_args = argv(commands["metrics"])
    reply = subprocess.run(metrics_args, cwd=tmp_path, capture_output=True, text=True, timeout=15)
    assert reply.returncode == 0, reply.stderr
    body = json.loads(reply.stdout)
    assert body["conferences"]["counters"]["collections"] == 1, body["conferences"]

    code = server.stop()
    assert code == 0, server.output[-3000:]
    assert "Traceback" not in server.output, server.output[-5000:]
