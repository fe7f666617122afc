"""The ``expsvc`` console script and ``python -m expsvc``.

Only the standard library is imported before the Ctrl-C handler is in place: a Ctrl-C at any moment of
start-up (the imports take ~0.1 s) prints one line and exits 130, never a ``KeyboardInterrupt`` traceback.
"""

from __future__ import annotations

import signal
import sys


def main() -> None:
    """Install the start-up Ctrl-C handler, then import and run the command line."""
    from expsvc import interrupts

    signal.signal(signal.SIGINT, interrupts.startup_handler)
    try:
        from expsvc.cli import main as cli_main

        cli_main()
    except KeyboardInterrupt:  # a Ctrl-C between the command's end and the exit
        sys.stderr.write(f"{interrupts.MESSAGE}\n")
        sys.exit(interrupts.EXIT_CODE)


if __name__ == "__main__":
    main()
