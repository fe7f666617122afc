"""The ``expsvc`` console script and ``python -m expsvc``.

Only the standard library is imported before the Ctrl-C handler is in place: a Ctrl-C at any moment of
start-up (the imports take ~0.1 s) prints one line and exits 130, never a ``KeyboardInterrupt`` traceback.
"""

from __future__ import annotations

import signal
import sys

from expsvc import interrupts


def install() -> None:
    """From now until the command runs, Ctrl-C prints one line and exits 130 at once."""
    signal.signal(signal.SIGINT, interrupts.startup_handler)


def run() -> None:
    """Import and run the command line."""
    try:
        from expsvc.cli import main as cli_main

        cli_main()
    except KeyboardInterrupt:  # a Ctrl-C between the command's end and the exit
        sys.stderr.write(f"{interrupts.MESSAGE}\n")
        sys.exit(interrupts.EXIT_CODE)


def main() -> None:
    """The handler first, then everything else."""
    install()
    run()


if __name__ == "__main__":
    main()
