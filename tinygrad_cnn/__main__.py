"""``python -m tinygrad_cnn``: the tinygrad-cnn command."""
import sys

from .cli import main

sys.exit(main())
