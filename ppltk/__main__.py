import sys

from ppltk.cli import main

sys.exit(main())
