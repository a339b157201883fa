import sys

from dltrain.cli import main

sys.exit(main())
