import sys

from tokenim.cli.main import main

sys.exit(main())
