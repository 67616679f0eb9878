"""The ``socketio-adapters`` command (also ``python -m socketio_adapters``).

``check URL``
    Connects two nodes to the broker at URL, sends probes between them, prints the
    round trip and the backend's capabilities; exit status 0, or 1 with a one-line
    error (bad URL or option, missing extra, broker unreachable, no round trip).
``demo``
    Runs the demo chat (``socketio_adapters.demo``) under uvicorn with several worker
    processes sharing one port and one cluster (needs the ``demo`` extra).
``distributor-demo``
    The distributor mode's demo: an edge (``socketio_adapters.demo.edge`` under
    uvicorn, several workers on one port) in front of a chat backend and a counter
    game backend, each a process of its own, restarted when it exits
    (``socketio_adapters.demo.launch``).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Callable, Sequence
from typing import TypeVar

from .errors import AdapterError
from .options import positive_float, positive_int
from .probe import ProbeResult, capability_text, probe
from .registry import URL_VARIABLE, create_backend

_T = TypeVar("_T")

__all__ = ["DEMO_APP", "DEMO_URL", "main"]

PROG = "socketio-adapters"
DEMO_URL = "local://socketio-adapters-demo"
"""The demo's cluster when no ``--url`` (nor ``SOCKETIO_ADAPTER_URL``) is given."""
DEMO_APP = "socketio_adapters.demo.app:app"


class _CommandError(Exception):
    """A failure to report in one line, exit status 1."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Tools for socketio-adapters: check a broker URL, run the demo, "
                    "host a local:// hub.",
        epilog=f"Run '{PROG} COMMAND --help' for a command's options.")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-v", "--verbose", action="store_true",
                        help="log what the library does (to stderr)")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    check = commands.add_parser(
        "check", parents=[common],
        help="connect to a broker URL and time a round trip between two nodes",
        description=(
            "Start two nodes on URL, wait until they hear each other, send probes from "
            "one to the other (server-side events with acks, through the broker) and "
            "print the round trip in milliseconds, the backend's capabilities and how "
            "many other nodes already use this URL and channel. Exit status 0 when the "
            "probes came back; otherwise 1, with a one-line error: a bad URL or "
            "option, a missing extra (pip install \"socketio-adapters[redis]\"), a "
            "broker that cannot be reached within --timeout, or probes that are lost."),
        epilog=f"example: {PROG} check redis://127.0.0.1:6379/0?channel=myapp")
    check.add_argument("url", metavar="URL",
                       help="broker URL, as given to create_manager(), e.g. "
                            "redis://127.0.0.1:6379/0, nats://127.0.0.1:4222, "
                            "local://myapp, memory://")
    check.add_argument("--timeout", type=_positive_float, default=5.0, metavar="SECONDS",
                       help="how long each step (connecting, the nodes finding each "
                            "other, each probe) may take (default: 5)")
    check.add_argument("--count", type=_positive_int, default=5, metavar="N",
                       help="probes to send; the median round trip is printed "
                            "(default: 5)")

    demo = commands.add_parser(
        "demo", parents=[common],
        help="run the demo chat on several uvicorn workers sharing one port",
        description=(
            "Run a chat page under uvicorn with --workers processes on one port; they "
            "form one cluster through --url. Open http://HOST:PORT in two tabs: each "
            "shows its worker, who is online on every worker, messages labelled with "
            "the worker they came from, and the events it missed while its connection "
            "was dropped (button 'drop connection'). The page's socket.io client keeps "
            "its default transports (long-polling, then websocket): no sticky routing "
            "is needed. Needs the demo extra: pip install \"socketio-adapters[demo]\"."),
        epilog="The page is served by the package itself (socketio_adapters/demo).")
    demo.add_argument("--workers", type=_positive_int, default=2, metavar="N",
                      help="uvicorn worker processes (default: 2)")
    distributor = commands.add_parser(
        "distributor-demo", parents=[common],
        help="run the distributor mode's demo: a chat and a counter game backend "
             "behind edge workers on one port",
        description=(
            "Run an edge (uvicorn, --edges worker processes on one port) that relays "
            "the namespaces /chat and /counter over --url to two backends, each a "
            "process of its own: a chat and a counter game. Open http://HOST:PORT in "
            "two tabs: every message and click is labelled with the backend process "
            "that handled it and the edge worker that relayed it. A backend that "
            "exits (kill it) is started again; its players keep their scores. Needs "
            "the demo extra: pip install \"socketio-adapters[demo]\"."),
        epilog="See docs/distributor.md for the distributor mode.")
    distributor.add_argument("--edges", type=_positive_int, default=2, metavar="N",
                             help="edge worker processes (default: 2)")
    for options in (demo, distributor):
        _demo_options(options)
    hub = commands.add_parser(
        "hub", parents=[common],
        help="host the hub of a local:// cluster outside the workers",
        description=(
            "Host the hub of the local:// cluster at URL whenever no server of it "
            "does (servers host it themselves otherwise): run it beside the workers, "
            "e.g. under a service manager, so the hub never shares a worker's event "
            "loop. Waits while another process hosts the hub, takes over when it "
            "stops; prints 'HUB <folder>' once it hosts it; stops on SIGTERM/SIGINT."),
        epilog=f"example: {PROG} hub local://myapp")
    hub.add_argument("url", metavar="URL", help="local://NAME or local:///folder")
    return parser


def _demo_options(parser: argparse.ArgumentParser) -> None:
    """The options every demo takes: where to listen, which cluster."""
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default: 127.0.0.1)")
    parser.add_argument("--port", type=_port, default=8000,
                        help="port to listen on (default: 8000)")
    parser.add_argument("--url", default=os.environ.get(URL_VARIABLE) or DEMO_URL,
                        help=f"the cluster's broker URL (default: ${URL_VARIABLE} if "
                             f"set, else the embedded {DEMO_URL}: no broker)")


def _checked(parse: Callable[[str], _T], what: str) -> Callable[[str], _T]:
    """An argparse ``type`` from an option parser: its ValueError says ``what``."""

    def convert(text: str) -> _T:
        try:
            return parse(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}: {text!r}") from None

    return convert


def _tcp_port(text: str) -> int:
    value = positive_int(text)
    if value > 65535:
        raise ValueError("not a TCP port")
    return value


_positive_float = _checked(positive_float, "a number > 0")
_positive_int = _checked(positive_int, "a whole number > 0")
_port = _checked(_tcp_port, "a TCP port (1-65535)")


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


def _report(result: ProbeResult) -> str:
    count = len(result.round_trips)
    return "\n".join((
        f"ok: {result.url} ({result.backend} backend)",
        f"round trip: {result.median_ms:.2f} ms (median of {count} probe"
        f"{'s' if count > 1 else ''} between two nodes; min {result.min_ms:.2f} ms)",
        f"other nodes on this URL and channel: {result.other_nodes}",
        f"capabilities: {capability_text(result.capabilities)}",
    ))


def _check(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO if args.verbose else logging.CRITICAL,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        result = asyncio.run(probe(args.url, timeout=args.timeout, count=args.count))
    except (AdapterError, OSError, TimeoutError) as exc:
        # AdapterError: ConfigurationError, MissingDependency, BrokerUnavailable,
        # ProbeFailed; OSError / TimeoutError: what a client library let through
        raise _CommandError(_one_line(exc)) from exc
    print(_report(result))
    return 0


def _demo_ready(url: str) -> None:
    """Fail in one line for a bad URL, a missing extra or no uvicorn."""
    try:
        create_backend(url)  # a bad URL or a missing extra fails here, once
    except AdapterError as exc:
        raise _CommandError(_one_line(exc)) from exc
    try:
        import uvicorn  # noqa: F401
    except ImportError as exc:
        if exc.name != "uvicorn":
            raise
        raise _CommandError(
            'the demo needs uvicorn: pip install "socketio-adapters[demo]"') from None
    os.environ[URL_VARIABLE] = url  # the workers build their manager from it


def _demo(args: argparse.Namespace) -> int:
    _demo_ready(args.url)
    import uvicorn

    print(f"{PROG} demo: {args.workers} worker(s) on http://{args.host}:{args.port} "
          f"sharing {args.url}; open it in two tabs (Ctrl+C stops)", flush=True)
    # websocket compression off, as socketio_adapters.AsyncServer's default (uvicorn
    # negotiates it, not the app; docs/deploying.md)
    uvicorn.run(DEMO_APP, host=args.host, port=args.port, workers=args.workers,
                lifespan="on", access_log=args.verbose, ws_per_message_deflate=False)
    return 0


def _distributor_demo(args: argparse.Namespace) -> int:
    from .demo.launch import children
    from .demo.processes import Supervisor

    _demo_ready(args.url)
    print(f"{PROG} distributor-demo: {args.edges} edge worker(s) on "
          f"http://{args.host}:{args.port}, a chat and a counter backend, sharing "
          f"{args.url}; open it in two tabs (Ctrl+C stops)", flush=True)
    return Supervisor(children(args.url, args.host, args.port, args.edges, args.verbose),
                      say=_say).run()


def _say(text: str) -> None:
    print(f"{PROG} distributor-demo: {text}", flush=True)


def _hub(args: argparse.Namespace) -> int:
    from .backends.local.standalone import serve

    if not args.url.startswith("local://"):
        raise _CommandError(f"a hub is for local:// URLs, not {args.url!r}")
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(name)s: %(message)s")
    try:
        asyncio.run(serve(args.url))
    except AdapterError as exc:
        raise _CommandError(_one_line(exc)) from exc
    return 0


_COMMANDS = {"check": _check, "demo": _demo, "distributor-demo": _distributor_demo,
             "hub": _hub}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line ``argv`` (default: ``sys.argv[1:]``); the exit status."""
    args = _parser().parse_args(argv)
    try:
        status: int = _COMMANDS[args.command](args)
    except _CommandError as exc:
        print(f"{PROG} {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return status


if __name__ == "__main__":  # pragma: no cover - python -m socketio_adapters.cli
    sys.exit(main())
