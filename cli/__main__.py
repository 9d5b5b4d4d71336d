"""``python -m cli ARGS``: the same as ``srgan ARGS``, for a checkout without the ``srgan`` entry point on the
PATH: ``python -m cli train pretrain ...``, ``python -m cli export ...``."""

from __future__ import annotations

import sys

from cli.main import main

if __name__ == "__main__":
    sys.exit(main())
