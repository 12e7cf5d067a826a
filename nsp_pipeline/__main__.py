"""``python -m nsp_pipeline``: the pipeline's stages on the command line."""

import sys

from nsp_pipeline.pipeline.cli import main

sys.exit(main())
