"""``python -m rnnzoo``: the same command line as the ``rnnzoo`` script."""

from rnnzoo.cli import main

if __name__ == "__main__":
    main()
