"""``python -m training ARGS``: the same as ``srgan ARGS`` (one parser, in ``cli/``), for a checkout without the
``srgan`` entry point on the PATH: ``python -m training train pretrain ...``, ``python -m training export ...``."""

from __future__ import annotations

import sys

from cli.main import main

if __name__ == "__main__":
    sys.exit(main())
