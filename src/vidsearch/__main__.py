import sys

from vidsearch.cli import main

sys.exit(main())
