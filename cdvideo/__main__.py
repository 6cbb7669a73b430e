"""`python -m cdvideo ...` (and `accelerate launch -m cdvideo train ...`)."""

import sys

from .cli import main

sys.exit(main())
