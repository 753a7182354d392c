"""The `tonebridge` command: `serve`, `phone` and `check-config` (shared/spec/operations.md)."""

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

    from tonebridge import phone

    phone_parser = sub.add_parser("phone", help="a softphone on Tonebridge's own stacks")
    phone.add_arguments(phone_parser)

    args = parser.parse_args(argv)
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


if __name__ == "__main__":
    sys.exit(main())
