"""``python -m client`` is ``cero``."""

from client.main import main

raise SystemExit(main())
