"""``python -m pixelfox`` is the ``pixelfox`` command."""

from pixelfox.cli.main import main

main()
