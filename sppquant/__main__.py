import sys

from sppquant.cli import main

sys.exit(main())
