"""``python -m flowplane``."""

from .cli import main

raise SystemExit(main())
