"""The ``expsvc`` command line (filled in by the CLI commit)."""


def main() -> None:
    raise SystemExit("expsvc CLI: not wired yet")
