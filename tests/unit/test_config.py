"""Configuration: the TOML contract of shared/spec/operations.md, and its errors with locations."""

from __future__ import annotations

import pytest

from tonebridge.config import Config, ConfigError, load_config, parse_config

FULL = """
[server]
http = "127.0.0.1:8080"
sip = "127.0.0.1:5060"
rtp_ports = [20000, 29999]
public_address = "127.0.0.1"
data_dir = "./data"

[[applications]]
key = "5f1c3c2a-0000-4000-8000-000000000001"
secret = "bXktc2VjcmV0LWluLWJhc2U2NA=="
callback_url = "http://127.0.0.1:9000/callbacks"
numbers = ["+15550001111"]

[[users]]
name = "alice"
password = "secret"

[[trunks]]
name = "default"
uri = "sip:127.0.0.1:5090"
username = ""
password = ""
"""


def test_the_documented_example_is_valid() -> None:
    config = parse_config(FULL)
    assert config.server.rtp_ports == (20000, 29999)
    assert config.applications[0].numbers == ["+15550001111"] and config.applications[0].key.startswith(
        "5f1c"
    )
    assert config.user("alice").password == "secret"
    assert not config.demo_mode


def test_embedded_defaults_run_the_demo(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TONEBRIDGE_CONFIG", raising=False)
    config = load_config(None)
    assert config == Config()
    assert config.demo_mode
    assert config.server.sip == "127.0.0.1:5060" and config.server.http == "127.0.0.1:8080"


def test_environment_names_the_file(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[server]\nsip = "127.0.0.1:5999"\n')
    monkeypatch.setenv("TONEBRIDGE_CONFIG", str(path))
    assert load_config().server.sip == "127.0.0.1:5999"


def test_unknown_keys_are_errors_with_name_and_line() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(
            '[server]\nsip = "127.0.0.1:5060"\nsipp = 1\n\n[[users]]\nname = "a"\npassword = "b"\ncolour = 2\n'
        )
    problems = {(p.location, p.line) for p in caught.value.problems}
    assert ("server.sipp", 3) in problems
    assert ("users[0].colour", 8) in problems
    assert "unknown key 'sipp'" in str(caught.value)


@pytest.mark.parametrize(
    ("text", "location"),
    [
        ("[server]\nrtp_ports = [30000, 20000]\n", "server.rtp_ports"),
        ('[server]\nsip = "nohost"\n', "server.sip"),
        ('[server]\nhttp = "127.0.0.1:99999"\n', "server.http"),
        ('[[applications]]\nkey = "k"\nsecret = "not base64!"\n', "applications[0].secret"),
        (
            '[[applications]]\nkey = "k"\nsecret = "YQ=="\ncallback_url = "ftp://x"\n',
            "applications[0].callback_url",
        ),
        ('[[trunks]]\nname = "t"\nuri = "http://x"\n', "trunks[0].uri"),
        ('[[users]]\nname = "bad name"\npassword = "x"\n', "users[0].name"),
    ],
)
def test_bad_values_name_their_location(text: str, location: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(text)
    assert location in [p.location for p in caught.value.problems]


def test_toml_syntax_error_has_a_line() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config("[server]\nsip = \n")
    assert caught.value.problems[0].line == 2


def test_a_number_owned_twice_is_refused() -> None:
    with pytest.raises(ConfigError):
        parse_config(
            '[[applications]]\nkey = "a"\nsecret = "YQ=="\nnumbers = ["1"]\n'
            '[[applications]]\nkey = "b"\nsecret = "YQ=="\nnumbers = ["1"]\n'
        )


def test_digest_algorithms_default_to_md5_and_accept_sha256() -> None:
    assert Config().server.digest_algorithms == ("MD5",)
    assert parse_config('[server]\ndigest_algorithms = ["sha-256", "MD5"]\n').server.digest_algorithms == (
        "SHA-256",
        "MD5",
    )
    with pytest.raises(ConfigError):
        parse_config('[server]\ndigest_algorithms = ["SHA-512"]\n')
