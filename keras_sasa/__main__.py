"""`python -m keras_sasa`: see keras_sasa.cli."""

import sys

from keras_sasa.cli import main

if __name__ == "__main__":
    sys.exit(main())
