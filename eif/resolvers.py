"""OmegaConf resolvers the configs use; registered on import, before Hydra composes anything
(so ``--cfg job --resolve`` and ``--help`` resolve them too)."""

from __future__ import annotations

import os
from typing import Any

from omegaconf import OmegaConf


def register() -> None:
    # ${join:${stages}} -> "train+evaluate": the W&B job type
    OmegaConf.register_new_resolver("join", lambda xs: "+".join(str(x) for x in xs), replace=True)
    # ${eif.pid:} -> this process's id: run dirs of jobs started in the same second stay apart
    OmegaConf.register_new_resolver("eif.pid", lambda: str(os.getpid()), replace=True)
    # ${eif.concat:[a],${oc.select:cluster.setup,null}} -> one list (null lists count as empty): the
    # SLURM profiles' own setup lines followed by the cluster's
    OmegaConf.register_new_resolver("eif.concat", _concat, replace=True)


def _concat(*lists: Any) -> list[Any]:
    return [item for items in lists if items is not None for item in items]


register()
