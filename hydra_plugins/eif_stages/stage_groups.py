"""The stages' config groups, composed without a hand-written list.

Hydra calls :meth:`EifStageGroups.manipulate_search_path` before it composes any config (``eif``,
``launch.py``, the compose API). It stores the config ``eif_stage_groups`` (a defaults list with
``<group>: default`` for every stage that declares a group), which ``conf/config.yaml`` includes
once, and adds the ``conf/`` dir of every further stage package (:mod:`eif.stage_names`) to the
search path, where that package's groups live.
"""

from __future__ import annotations

from hydra.core.config_search_path import ConfigSearchPath
from hydra.core.config_store import ConfigStore
from hydra.plugins.search_path_plugin import SearchPathPlugin

from eif.stage_names import MODULES


class EifStageGroups(SearchPathPlugin):
    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        for conf in sorted({str(m.conf) for m in MODULES.values() if m.conf is not None}):
            search_path.append("eif-stages", f"file://{conf}")
        groups = [{m.group: "default"} for m in MODULES.values() if m.group is not None]
        ConfigStore.instance().store(name="eif_stage_groups", node={"defaults": groups})
