"""Packaging beyond what pyproject.toml can say: the Hydra configs live in ``conf/`` at the top of the
repository (where a reader of the lightning-hydra-template layout expects them) but must ship inside
the wheel, as package ``eif.conf``, for the installed ``eif`` command to find them
(``eif.cli.config_dir``). Machine-specific ``conf/local/`` files stay out of the wheel."""

from setuptools import find_namespace_packages, find_packages, setup

groups = [f"eif.conf.{p}" for p in find_namespace_packages(where="conf", exclude=["local", "local.*"])]
setup(
    # hydra_plugins.eif_stages: composes the stages' config groups (docs/architecture.md, "Stages")
    packages=[*find_packages(include=["eif", "eif.*"]), "hydra_plugins.eif_stages", "eif.conf", *groups],
    package_dir={"eif.conf": "conf"},
    package_data={"eif.conf": ["*.yaml"], **{g: ["*.yaml"] for g in groups}},
)
