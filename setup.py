"""Packaging beyond what pyproject.toml can say: the Hydra configs live in ``conf/`` at the top of the
repository (where a reader of the lightning-hydra-template layout expects them) but must ship inside
the wheel, as package ``eif.conf``, for the installed ``eif`` command to find them
(``eif.cli.config_dir``). Machine-specific ``conf/local/`` files stay out of the wheel. The page
templates (``eif/pages/templates``: HTML, CSS, JavaScript) ship as data packages, one per folder."""

from setuptools import find_namespace_packages, find_packages, setup

groups = [f"eif.conf.{p}" for p in find_namespace_packages(where="conf", exclude=["local", "local.*"])]
templates = find_namespace_packages(include=["eif.pages.templates", "eif.pages.templates.*"])
setup(
    packages=[*find_packages(include=["eif", "eif.*"]), "eif.conf", *groups, *templates],
    package_dir={"eif.conf": "conf"},
    package_data={
        "eif.conf": ["*.yaml"],
        **{g: ["*.yaml"] for g in groups},
        **{t: ["*.html", "*.css", "*.js"] for t in templates},
    },
)
