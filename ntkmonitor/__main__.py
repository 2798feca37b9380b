"""``python -m ntkmonitor``: the same as the ``ntkmonitor`` command."""

from .cli import run

if __name__ == "__main__":
    run()
