import sys

from cantainer.daemon.main import main

sys.exit(main())
