"""``python -m mockforge_wsgi``: the ``mockforge`` command."""

from .cli import main

main()
