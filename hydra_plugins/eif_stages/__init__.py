"""Hydra finds this plugin by itself (the ``hydra_plugins`` namespace): it composes every stage's config
group, so adding a stage needs no line in ``conf/config.yaml`` (docs/architecture.md, "Stages")."""
