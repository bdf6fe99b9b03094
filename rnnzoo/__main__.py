"""``python -m rnnzoo`` and the ``rnnzoo`` script: the command line, started with
the OpenMP wait policy that suits how busy the machine is.

OpenMP reads ``OMP_WAIT_POLICY`` when torch loads it, so it is chosen here, before
anything imports torch (importing :mod:`rnnzoo` does not): ``rnnzoo train`` keeps
OpenMP's default (spin, then sleep) when the CPUs it may use are idle at launch,
and every other case waits passively (:mod:`rnnzoo.waitpolicy`). A value the user
set is kept.
"""

from __future__ import annotations

import os
import sys


def main() -> None:
    from rnnzoo import waitpolicy

    try:
        waitpolicy.choose(os.environ, sys.argv[1:])
    except KeyboardInterrupt:  # during the CPU sample, before the CLI's own handling
        sys.exit(130)
    from rnnzoo.cli import main as cli_main

    cli_main()


if __name__ == "__main__":
    main()
