"""The server's configuration: the TOML file of shared/spec/operations.md, validated, with embedded defaults.

Every problem is reported with its location (`applications[0].numbers`, line 12) and unknown keys are
errors, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import os
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

DEFAULT_HTTP = "127.0.0.1:8080"
DEFAULT_SIP = "127.0.0.1:5060"


def split_host_port(text: str) -> tuple[str, int]:
    """`host:port` (or `[v6]:port`) into its parts; raises ValueError naming the fault."""
    host, sep, port = text.rpartition(":")
    if not sep or not host:
        raise ValueError(f"expected host:port, got {text!r}")
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"port must be 0..65535 in {text!r}")
    return host.strip("[]"), int(port)


def _check_address(value: str) -> str:
    host, _ = split_host_port(value)
    try:
        ipaddress.ip_address(host)
    except ValueError:
        if not re.fullmatch(r"[A-Za-z0-9.\-]+", host):
            raise ValueError(f"invalid host {host!r}") from None
    return value


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ServerConfig(_Strict):
    http: str = DEFAULT_HTTP
    sip: str = DEFAULT_SIP
    rtp_ports: tuple[int, int] = (20000, 29999)
    public_address: str = "127.0.0.1"
    data_dir: str = "./data"
    # Digest algorithms challenged for REGISTER, in order of preference (RFC 8760). MD5 alone by default:
    # deployed phones (baresip 1.0 among them) fail outright when any SHA-256 challenge is present.
    digest_algorithms: tuple[str, ...] = ("MD5",)

    _check_http = field_validator("http", "sip")(_check_address)

    @field_validator("digest_algorithms")
    @classmethod
    def _check_algorithms(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        value = tuple(a.upper() for a in value)
        if not value or len(set(value)) != len(value) or not set(value) <= {"MD5", "SHA-256"}:
            raise ValueError('digest_algorithms must be a non-empty list of distinct "MD5" and "SHA-256"')
        return value

    @field_validator("rtp_ports")
    @classmethod
    def _check_ports(cls, value: tuple[int, int]) -> tuple[int, int]:
        low, high = value
        if not 1024 <= low < high <= 65535:
            raise ValueError("rtp_ports must be [low, high] with 1024 <= low < high <= 65535")
        if high - low < 3:
            raise ValueError("rtp_ports must span at least two RTP/RTCP pairs")
        return value


class ApplicationConfig(_Strict):
    key: Annotated[str, Field(min_length=1, max_length=128)]
    secret: str
    callback_url: str = ""
    numbers: list[str] = []

    @field_validator("secret")
    @classmethod
    def _check_secret(cls, value: str) -> str:
        try:
            base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("secret must be base64, as Sinch issues application secrets") from None
        return value

    @field_validator("callback_url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        if value and not re.match(r"^https?://[^\s/]+", value):
            raise ValueError("callback_url must be an http:// or https:// URL")
        return value


class UserConfig(_Strict):
    name: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._\-+]+$")]
    password: Annotated[str, Field(min_length=1)]


class OperatorConfig(_Strict):
    """A console operator: sees and acts on every application's rooms (docs/operations.md, "Console")."""

    name: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._\-@+]+$")]
    password_hash: str

    @field_validator("password_hash")
    @classmethod
    def _check_hash(cls, value: str) -> str:
        from tonebridge.api.access import parse_password_hash

        parse_password_hash(value)
        return value


class TrunkConfig(_Strict):
    name: Annotated[str, Field(min_length=1)]
    uri: str
    username: str = ""
    password: str = ""

    @field_validator("uri")
    @classmethod
    def _check_uri(cls, value: str) -> str:
        from tonebridge.sip.message import SipUri

        SipUri.parse(value)
        return value


class CallbacksConfig(_Strict):
    # Delivered and given-up callbacks stay in the store (the delivery log) this long, then are pruned.
    retention_seconds: Annotated[float, Field(gt=0)] = 7 * 86400.0


class RecordsConfig(_Strict):
    """docs/configuration.md, "[records]": how long call records are kept."""

    # Ended calls' records (with their conferences and callback attempts) are pruned this long after start.
    retention_days: Annotated[float, Field(gt=0)] = 30.0


class HttpConfig(_Strict):
    """Limits on the HTTP port's connections (docs/operations.md, "HTTP limits")."""

    # A request's line and headers must be complete this long after the connection (or the request's first
    # byte, on a kept-alive one); otherwise the connection is closed (slow-loris).
    header_timeout_seconds: Annotated[float, Field(gt=0)] = 10.0
    # Larger request lines plus headers are refused.
    max_header_bytes: Annotated[int, Field(ge=1024, le=1024 * 1024)] = 16 * 1024
    # An idle kept-alive connection is closed after this long.
    keep_alive_seconds: Annotated[float, Field(gt=0)] = 5.0
    # Open connections (event streams included) beyond which requests get 503.
    max_connections: Annotated[int, Field(ge=1)] = 1000


class SecurityConfig(_Strict):
    """docs/operations.md, "Security": what applications may make the server fetch, and REGISTER lockout."""

    # Fetches an application asks for (`#href` prompts, callback URLs from answers and the API) may reach
    # loopback, private, link-local... addresses: all of them with allow_private_fetch, or those listed.
    allow_private_fetch: bool = False
    fetch_allow: tuple[str, ...] = ()
    # A source with this many failed REGISTER authentications within the window is refused (403) for the
    # lockout period, without its credentials being checked. 0 turns the lockout off.
    register_max_failures: Annotated[int, Field(ge=0)] = 10
    register_failure_window: Annotated[float, Field(gt=0)] = 300.0
    register_lockout_seconds: Annotated[float, Field(gt=0)] = 900.0

    @field_validator("fetch_allow")
    @classmethod
    def _check_networks(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for net in value:
            try:
                ipaddress.ip_network(net, strict=False)
            except ValueError:
                raise ValueError(f"fetch_allow: {net!r} is not a network (like 10.0.0.0/8)") from None
        return value


class LimitsConfig(_Strict):
    """New INVITEs admitted per source address (sip/admission.py). One core sets up about 130 calls a second
    for an application (docs/benchmarks.md, "SIP flood"): the defaults keep one source well under that, so a
    flood from it leaves room for the others."""

    invites_per_second_per_source: Annotated[float, Field(gt=0)] = 50.0
    invite_burst_per_source: Annotated[int, Field(ge=1)] = 100
    max_setting_up_per_source: Annotated[int, Field(ge=1)] = 200
    max_setting_up: Annotated[int, Field(ge=1)] = 1000


class ClusterConfig(_Strict):
    """docs/cluster.md: this node's place in a cluster whose memory is Redis. Absent, the server is alone."""

    redis: str
    node_id: Annotated[str, Field(pattern=r"^[A-Za-z0-9._-]{1,64}$")]
    # What the other nodes and the fronts use to reach this one; the [server] addresses when unset.
    advertise_sip: str | None = None
    advertise_http: str | None = None
    # A node whose heartbeat has not been seen for node_ttl_seconds is dead for every other node.
    heartbeat_seconds: Annotated[float, Field(gt=0, le=60)] = 5.0
    node_ttl_seconds: Annotated[float, Field(gt=0, le=300)] = 15.0

    _check_advertised = field_validator("advertise_sip", "advertise_http")(
        lambda value: value if value is None else _check_address(value)
    )

    @field_validator("redis")
    @classmethod
    def _check_redis(cls, value: str) -> str:
        if not re.fullmatch(r"rediss?://[^\s/]+(/\d+)?", value):
            raise ValueError('redis must be a URL like "redis://127.0.0.1:6379/0"')
        return value

    @model_validator(mode="after")
    def _check_ttl(self) -> ClusterConfig:
        if self.node_ttl_seconds < 2 * self.heartbeat_seconds:
            raise ValueError("node_ttl_seconds must be at least twice heartbeat_seconds")
        return self


class SipConfig(_Strict):
    """docs/configuration.md, "[sip]": the base timer of RFC 3261 §17, from which the retransmission and
    timeout intervals of every transaction (and the wait for a 2xx's ACK) follow."""

    # T1, the round-trip estimate: 500 ms by §17.1.1.1; a LAN or loopback deployment may lower it so that
    # lost messages are found sooner.
    timer_t1_ms: Annotated[int, Field(ge=50, le=5000)] = 500


class MediaConfig(_Strict):
    """docs/operations.md, "Media": when a call whose peer has gone silent is ended."""

    # An answered call whose peer sent neither RTP nor RTCP for this long is ended (BYE, DiCE GENERALERROR);
    # a call on hold is exempt. 0 turns the check off.
    rtp_timeout_seconds: Annotated[float, Field(ge=0)] = 60.0


class Config(_Strict):
    server: ServerConfig = ServerConfig()
    sip: SipConfig = SipConfig()
    media: MediaConfig = MediaConfig()
    http: HttpConfig = HttpConfig()
    callbacks: CallbacksConfig = CallbacksConfig()
    records: RecordsConfig = RecordsConfig()
    limits: LimitsConfig = LimitsConfig()
    security: SecurityConfig = SecurityConfig()
    cluster: ClusterConfig | None = None
    applications: list[ApplicationConfig] = []
    users: list[UserConfig] = []
    trunks: list[TrunkConfig] = []
    operators: list[OperatorConfig] = []

    @model_validator(mode="after")
    def _check_unique(self) -> Config:
        seen: dict[str, str] = {}
        for app in self.applications:
            for number in app.numbers:
                if number in seen:
                    raise ValueError(
                        f"number {number} belongs to two applications ({seen[number]}, {app.key})"
                    )
                seen[number] = app.key
        names = [u.name for u in self.users]
        if len(names) != len(set(names)):
            raise ValueError("[[users]] names must be unique")
        operators = {o.name for o in self.operators}
        if len(operators) != len(self.operators):
            raise ValueError("[[operators]] names must be unique")
        if taken := operators & {a.key for a in self.applications}:
            # The console's login takes either; one name must not mean both.
            raise ValueError(f"[[operators]] name {min(taken)} is also an application key")
        return self

    @property
    def demo_mode(self) -> bool:
        """With no applications configured, the built-in demo application answers every call."""
        return not self.applications

    def user(self, name: str) -> UserConfig | None:
        return next((u for u in self.users if u.name == name), None)


@dataclass(frozen=True)
class ConfigProblem:
    location: str
    line: int | None
    message: str

    def __str__(self) -> str:
        where = f" (line {self.line})" if self.line else ""
        return f"{self.location}{where}: {self.message}"


class ConfigError(Exception):
    def __init__(self, source: str, problems: list[ConfigProblem]) -> None:
        super().__init__("\n".join(f"{source}: {p}" for p in problems))
        self.source = source
        self.problems = problems


def _key_lines(text: str) -> dict[tuple[Any, ...], int]:
    """Map each key's location (`("applications", 0, "key")`) to its line, for error messages."""
    lines: dict[tuple[Any, ...], int] = {}
    table: tuple[Any, ...] = ()
    counters: dict[str, int] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if match := re.match(r"^\[\[\s*([A-Za-z0-9_\-]+)\s*\]\]", line):
            name = match.group(1)
            counters[name] = counters.get(name, -1) + 1
            table = (name, counters[name])
            lines.setdefault(table, number)
        elif match := re.match(r"^\[\s*([A-Za-z0-9_\-.]+)\s*\]", line):
            table = tuple(match.group(1).split("."))
            lines.setdefault(table, number)
        elif match := re.match(r"^([A-Za-z0-9_\-]+)\s*=", line):
            lines.setdefault((*table, match.group(1)), number)
    return lines


def parse_config(text: str, source: str = "<config>") -> Config:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        match = re.search(r"line (\d+)", str(exc))
        raise ConfigError(
            source, [ConfigProblem("toml", int(match.group(1)) if match else None, str(exc))]
        ) from None
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        lines = _key_lines(text)
        problems = []
        for error in exc.errors():
            loc = tuple(error["loc"])
            line = None
            for cut in range(len(loc), 0, -1):
                if loc[:cut] in lines:
                    line = lines[loc[:cut]]
                    break
            location = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in loc).lstrip(
                "."
            )
            message = error["msg"]
            if error["type"] == "extra_forbidden":
                message = f"unknown key {loc[-1]!r}"
            problems.append(ConfigProblem(location or "config", line, message.removeprefix("Value error, ")))
        raise ConfigError(source, problems) from None


def load_config(path: str | os.PathLike[str] | None = None) -> Config:
    """Read the config named by `path` or $TONEBRIDGE_CONFIG, or return the embedded defaults."""
    if path is None:
        path = os.environ.get("TONEBRIDGE_CONFIG") or None
    if path is None:
        return Config()
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(str(file), [ConfigProblem("file", None, exc.strerror or str(exc))]) from None
    return parse_config(text, str(file))
