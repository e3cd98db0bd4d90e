"""``python -m training.cli``: the ``cascade-router`` command."""

from training.cli.app import main

main()
