"""`python -m cdvideo ...` (and `accelerate launch -m cdvideo train ...`)."""

import sys

from cdvideo.apps.cli import main

sys.exit(main())
