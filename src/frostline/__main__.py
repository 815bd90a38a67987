"""``python -m frostline`` is the ``frostline`` command."""

from .cli import main

raise SystemExit(main())
