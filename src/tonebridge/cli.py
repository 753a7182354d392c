"""The `tonebridge` command: `serve`, `phone`, `check-config` (shared/spec/operations.md), `records` (call
records from the store) and `hash-password` (for `[[operators]]`)."""

from __future__ import annotations

import os

# One media process does its numpy work on its own core: BLAS worker threads only contend with the
# event loop (measured 4x slower per tick on two cores). Set before numpy is first imported.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402
import asyncio
import sys

from tonebridge import __version__
from tonebridge.config import ConfigError, load_config
from tonebridge.logging_setup import configure_logging


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tonebridge", description="Self-hosted voice conferencing server")
    parser.add_argument("--version", action="version", version=f"tonebridge {__version__}")
    parser.add_argument("--log-level", default="INFO")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the server")
    serve.add_argument(
        "--config", help="TOML config file (default: $TONEBRIDGE_CONFIG, else embedded defaults)"
    )

    check = sub.add_parser("check-config", help="validate a config file")
    check.add_argument("file")

    records = sub.add_parser("records", help="list the calls in the store (the server need not run)")
    records.add_argument("--config", help="TOML config file whose data_dir holds the store")
    records.add_argument(
        "--since", help="calls started since: ISO 8601, Unix seconds or a duration (10m, 2h)"
    )
    records.add_argument("--format", choices=("csv", "json"), default="csv")

    sub.add_parser(
        "hash-password",
        help="print an [[operators]] password_hash for a password read from stdin (prompted on a terminal)",
    )

    from tonebridge import phone

    phone_parser = sub.add_parser("phone", help="a softphone on Tonebridge's own stacks")
    phone.add_arguments(phone_parser)

    from tonebridge.cluster import orchestrate

    cluster = sub.add_parser("cluster", help="a cluster of nodes behind Kamailio and HAProxy on this machine")
    orchestrate.add_arguments(cluster)

    args = parser.parse_args(argv)
    if args.command == "cluster":
        return orchestrate.run(args)
    if args.command == "hash-password":
        return _hash_password()
    if args.command == "records":
        return _records(args)
    if args.command == "check-config":
        try:
            load_config(args.file)
        except ConfigError as exc:
            print(str(exc), file=sys.stderr)
            return 1
        print(f"{args.file}: OK")
        return 0

    configure_logging(args.log_level)
    if args.command == "serve":
        try:
            config = load_config(args.config)
        except ConfigError as exc:
            print(str(exc), file=sys.stderr)
            return 1
        from tonebridge.server import Server

        try:
            asyncio.run(Server(config).run())
        except OSError as exc:
            print(f"tonebridge: cannot start: {exc}", file=sys.stderr)
            return 1
        return 0
    if args.command == "phone":
        try:
            return asyncio.run(phone.run_phone(args))
        except KeyboardInterrupt:
            return 130
    return 2


def _hash_password() -> int:
    from getpass import getpass

    from tonebridge.api.access import hash_password

    # Prompted (not echoed) on a terminal; from a pipe, the first line is the password.
    password = getpass("Password: ") if sys.stdin.isatty() else sys.stdin.readline().rstrip("\r\n")
    if not password:
        print("tonebridge: empty password", file=sys.stderr)
        return 1
    print(hash_password(password))
    return 0


def _records(args: argparse.Namespace) -> int:
    import json
    import time
    from pathlib import Path

    from tonebridge.calls.history_format import as_csv, as_json, parse_since
    from tonebridge.store.db import SchemaError, Store

    try:
        config = load_config(args.config)
        since = parse_since(args.since, time.time()) if args.since else None
    except (ConfigError, ValueError) as exc:
        print(f"tonebridge: {exc}", file=sys.stderr)
        return 1
    path = Path(config.server.data_dir) / "tonebridge.sqlite3"
    if not path.is_file():  # opening a Store would create an empty one
        print(f"tonebridge: no store at {path}", file=sys.stderr)
        return 1
    try:
        with Store(path) as store:
            history = store.call_history(since=since)
    except SchemaError as exc:
        print(f"tonebridge: {exc}", file=sys.stderr)
        return 1
    if args.format == "json":
        print(json.dumps([as_json(entry) for entry in history], indent=2))
    else:
        sys.stdout.write(as_csv(history))
    return 0


if __name__ == "__main__":
    sys.exit(main())
