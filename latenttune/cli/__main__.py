"""``python -m latenttune.cli``: the ``latenttune`` command (also used by ``torchrun`` for training)."""

import sys

from latenttune.cli.main import main

sys.exit(main())
