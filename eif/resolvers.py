"""OmegaConf resolvers the configs use; registered on import, before Hydra composes anything
(so ``--cfg job --resolve`` and ``--help`` resolve them too)."""

from __future__ import annotations

import os

from omegaconf import OmegaConf


def register() -> None:
    # ${join:${stages}} -> "train+evaluate": the W&B job type
    OmegaConf.register_new_resolver("join", lambda xs: "+".join(str(x) for x in xs), replace=True)
    # ${eif.pid:} -> this process's id: run dirs of jobs started in the same second stay apart
    OmegaConf.register_new_resolver("eif.pid", lambda: str(os.getpid()), replace=True)


register()
