"""`medtransfer readers --config <yaml> [--port N] [key=value ...]`: serve the blinded reader study of
a study's stored adversarial sets until Ctrl-C, then write its report and log it to MLflow."""
from __future__ import annotations

import argparse
import signal
import sys
from typing import TYPE_CHECKING

from .limits import MAX_NEW_READERS, PSEUDONYM

if TYPE_CHECKING:
    from .server import ReaderServer

DEFAULT_PORT = 8765


def add_parser(commands) -> None:
    """The `readers` subcommand on the CLI's subparsers."""
    readers = commands.add_parser(
        "readers", help="serve a blinded reader study (2AFC) of the study's adversarial sets",
        description="Serve a web page where readers, under a pseudonym, pick which of two images (a clean "
                    "test image and its attacked version, in random order) was attacked. Every answer is "
                    "stored as it is given; a session resumes by its pseudonym. Ctrl-C stops the server, "
                    "writes detection rates per reader and attack setting and logs a kind=readers run "
                    "under the study's run in MLflow. Run the study first (same config and overrides).")
    readers.add_argument("--config", required=True, metavar="YAML", help="the study's config file")
    readers.add_argument("--port", type=int, default=None, help=f"local port (default {DEFAULT_PORT} if free, else any)")
    readers.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    readers.add_argument("--domain", default=None, help="with several `domains`: the one to show")
    readers.add_argument("--trials-per-set", type=int, default=20, metavar="N",
                         help="test images shown per adversarial set (default 20)")
    readers.add_argument("--repeats", type=int, default=None, metavar="N",
                         help="trials each reader sees twice, for consistency (default 10%% of the others)")
    readers.add_argument("--seed", type=int, default=None, help="the plan's seed (default: the study's seed)")
    readers.add_argument("--zoom", type=int, default=None, metavar="K",
                         help="show images K times their size, nearest neighbour (default: up to 480 px)")
    readers.add_argument("--readers", default=None, metavar="A,B,...",
                         help="the only pseudonyms taken (default: any, up to --max-new-readers new ones)")
    readers.add_argument("--max-new-readers", type=int, default=MAX_NEW_READERS, metavar="N",
                         help="without --readers: new pseudonyms (no answers yet) this server takes "
                              f"(default {MAX_NEW_READERS})")
    readers.add_argument("overrides", nargs="*", metavar="key=value", help="the study's overrides, as given to run")


def bind(host: str, port: int | None) -> ReaderServer:
    """The server's socket, bound before anything is read or written (its sessions come later)."""
    from .server import ReaderServer  # here: `add_parser` is on every command's way, this is not

    try:
        if port is not None:
            return ReaderServer(None, host, port)
        try:
            return ReaderServer(None, host, DEFAULT_PORT)
        except OSError:
            return ReaderServer(None, host, 0)
    except (OSError, UnicodeError, ValueError) as err:  # busy port, unknown host, a name IDNA refuses
        shown = port if port is not None else "any port"
        raise ValueError(f"--host/--port: cannot listen on {host!r}, {shown} "
                         f"({getattr(err, 'strerror', None) or err})") from None


def option_problem(args: argparse.Namespace) -> str | None:
    """The first option value out of range, as one line."""
    if args.port is not None and not 0 <= args.port <= 65535:
        return f"--port: {args.port} is not a port (0 to 65535; 0: any free one)"
    if args.zoom is not None and args.zoom < 1:
        return f"--zoom: {args.zoom} must be at least 1"
    if args.max_new_readers < 0:
        return f"--max-new-readers: {args.max_new_readers} must be 0 or more"
    for name in (args.readers.split(",") if args.readers is not None else ()):
        if not PSEUDONYM.fullmatch(name):
            return f"--readers: {name!r} is not a pseudonym (1 to 40 letters, digits, '-' or '_')"
    return None


def readers_command(args: argparse.Namespace) -> int:
    from ..design.config import ConfigError, load_config
    from .readers import ReaderStudy

    if problem := option_problem(args):
        print(f"medtransfer readers: error: {problem}", file=sys.stderr)
        return 2
    # from the start: a SIGTERM while the data is read must not be swallowed by a library's handler
    previous = signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    server = None
    try:
        server = bind(args.host, args.port)
        allowed = None if args.readers is None else frozenset(args.readers.split(","))
        study = ReaderStudy(load_config(args.config, args.overrides), args.domain, args.trials_per_set,
                            args.repeats, args.seed, args.zoom, allowed, args.max_new_readers)
        server.sessions = study.sessions
    except (ConfigError, ValueError, FileNotFoundError) as err:
        print(f"medtransfer readers: error: {err}", file=sys.stderr)
        if server is not None:
            server.server_close()
        signal.signal(signal.SIGTERM, previous)
        return 2
    print(f"Reader study: {study.plan.length} trials per reader ({len(study.plan.base)} images, "
          f"{study.plan.repeats} repeated); answers in {study.folder}\n  {server.url}\n"
          "(Ctrl-C stops it and logs the results)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        signal.signal(signal.SIGTERM, previous)
        text, link = study.finish()
        print(f"\n{text}\nReport: {study.folder}\nMLflow run: {link}", flush=True)
    return 0
