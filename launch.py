"""The single entry point (also installed as the ``eif`` command): compose the Hydra config and run
the stages it names.

    python launch.py                                   # embedded default (Fashion-MNIST)
    python launch.py -m dataset=cub,cars,inshop seed=0,1,2,3,4
"""

import os
from pathlib import Path

os.environ.setdefault("EIF_ROOT", str(Path(__file__).resolve().parent))

from eif.cli import main  # noqa: E402 - EIF_ROOT must be set before the configs resolve paths

if __name__ == "__main__":
    main()
