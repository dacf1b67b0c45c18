import sys

from recsys_ebm.cli import main

sys.exit(main())
