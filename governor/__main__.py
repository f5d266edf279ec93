"""``python -m governor``: the same as the ``governor`` command."""

import sys


def run() -> None:
    """The command, with Ctrl-C while its modules load as quiet as Ctrl-C later on."""
    try:
        from governor.cli import main

        code = main()
    except KeyboardInterrupt:
        code = 130
    sys.exit(code)


if __name__ == "__main__":
    run()
