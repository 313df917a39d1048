"""Packaging beyond what pyproject.toml can say: the Hydra configs live in ``conf/`` and the sweep configs
in ``sweeps/`` at the top of the repository (where a reader of the lightning-hydra-template layout expects
them) but must ship inside the wheel, as packages ``eif.conf`` and ``eif.sweeps``, for the installed
``eif`` command to find them (``eif.cli.config_dir``; the ``hydra_plugins.eif_sweeps`` plugin puts the
sweeps on the search path). Of ``conf/local/`` only the two tracked files ship: the others are
machine-specific and git-ignored. The page templates (``eif/pages/templates``: HTML, CSS, JavaScript)
ship as data packages, one per folder."""

from setuptools import find_namespace_packages, find_packages, setup

groups = [f"eif.conf.{p}" for p in find_namespace_packages(where="conf", exclude=["local", "local.*"])]
sweep_groups = [f"eif.sweeps.{p}" for p in find_namespace_packages(where="sweeps")]
templates = find_namespace_packages(include=["eif.pages.templates", "eif.pages.templates.*"])
setup(
    packages=[
        *find_packages(include=["eif", "eif.*"]),
        "eif.conf",
        *groups,
        "eif.conf.local",
        "eif.sweeps",
        *sweep_groups,
        *templates,
        "hydra_plugins.eif_sweeps",
    ],
    package_dir={"eif.conf": "conf", "eif.sweeps": "sweeps"},
    package_data={
        "eif.conf": ["*.yaml"],
        **{g: ["*.yaml"] for g in groups},
        "eif.conf.local": ["default.yaml", "example_cluster.yaml"],
        "eif.sweeps": ["*.yaml"],
        **{g: ["*.yaml"] for g in sweep_groups},
        **{t: ["*.html", "*.css", "*.js"] for t in templates},
    },
)
