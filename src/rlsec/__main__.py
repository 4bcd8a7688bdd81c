"""``python -m rlsec`` runs the ``rlsec`` command."""

from rlsec.cli import main

main()
