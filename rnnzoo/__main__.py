"""``python -m rnnzoo`` and the ``rnnzoo`` script: the command line, started with
OpenMP's threads waiting passively.

By default an OpenMP thread that finishes its share of work spins for a while
before it sleeps. On a machine whose cores are busy with other jobs, the spinning
threads take cores from the threads that still have work, and training runs
several times slower (docs/performance.md). ``OMP_WAIT_POLICY=PASSIVE`` makes them
sleep at once. OpenMP reads the variable when torch loads it, so it is set here,
before anything imports torch (importing :mod:`rnnzoo` does not); a value the user
set is kept.
"""

from __future__ import annotations

import os

WAIT_POLICY = "PASSIVE"


def main() -> None:
    os.environ.setdefault("OMP_WAIT_POLICY", WAIT_POLICY)
    from rnnzoo.cli import main as cli_main

    cli_main()


if __name__ == "__main__":
    main()
