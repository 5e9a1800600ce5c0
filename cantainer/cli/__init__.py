"""``cantainer``: the command line, a thin client of the local API.

    parser.py     the grammar: commands, arguments, their types
    commands.py   each command: requests to the daemon, its answers printed
    client.py     the API socket: one request, reply lines, errors with their kind
    terminal.py   run -i/-t and exec: terminals relayed

Start-up time counts: nothing here imports more than the standard library,
``cantainer.errors`` and ``cantainer.config`` (a test checks ``sys.modules``).
Exit codes: the error's kind (``errors.EXIT_CODES``); ``run`` and ``exec`` 125
when the daemon refuses, else the command's own.
"""

from __future__ import annotations

import os
import sys

from cantainer.errors import CantainerError, exit_code


def main(argv: list[str] | None = None) -> int:
    from cantainer.cli.parser import build_parser, command_named

    argv = sys.argv[1:] if argv is None else argv
    args = build_parser(only=command_named(argv)).parse_args(argv)
    try:
        return args.func(args)
    except CantainerError as exc:
        print(f"cantainer: error: {exc}", file=sys.stderr)
        return exit_code(exc)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0


def run() -> None:
    """The ``cantainer`` command: ``main``, its output flushed, and out at once.  The
    interpreter's own end (every object of every module freed one by one) cost each
    command about 5 ms, a tenth of a container's start; nothing else is left to do at
    exit (a terminal is given back before ``main`` returns)."""
    code = main()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BrokenPipeError:
            pass  # `| head` read what it wanted
    os._exit(0 if code is None else code)
