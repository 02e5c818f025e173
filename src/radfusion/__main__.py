"""``python -m radfusion`` runs the command line."""

from radfusion.cli import main

main()
