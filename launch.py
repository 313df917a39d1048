"""The single entry point: compose the Hydra config and run the stages it names.

python launch.py                                   # embedded default (Fashion-MNIST)
python launch.py -m dataset=cub,cars,inshop seed=0,1,2,3,4
"""

import os
from pathlib import Path

import hydra
from omegaconf import DictConfig

os.environ.setdefault("EIF_ROOT", str(Path(__file__).resolve().parent))


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> dict | None:
    from eif.pipeline import run_job_cli

    return run_job_cli(cfg)


if __name__ == "__main__":
    main()
