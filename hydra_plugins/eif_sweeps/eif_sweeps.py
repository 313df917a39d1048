"""Puts eif's sweep configs (``sweeps/`` in a checkout, ``eif/sweeps`` in an installed wheel) on the
config search path of the eif app, so ``eif -m --config-name table1_fmnist`` (or ``python launch.py``)
finds them from any directory without ``--config-dir sweeps``.

Hydra loads every plugin in the ``hydra_plugins`` namespace for every Hydra application in the
environment, so this one only acts when the app's primary config directory is eif's own ``conf``; it
locates the package with ``find_spec`` instead of importing it.
"""

from __future__ import annotations

from importlib.util import find_spec
from pathlib import Path

from hydra.core.config_search_path import ConfigSearchPath
from hydra.plugins.search_path_plugin import SearchPathPlugin

MARKER = "table1_fmnist.yaml"  # a sweep that every copy of sweeps/ holds


def eif_dirs() -> tuple[Path, Path] | None:
    """(conf dir, sweeps dir) of the importable eif, or None when eif or its sweeps are not there."""
    spec = find_spec("eif")
    if spec is None or spec.origin is None:
        return None
    package = Path(spec.origin).resolve().parent
    for root in (package.parent, package):  # a source checkout, an installed wheel
        conf, sweeps = root / "conf", root / "sweeps"
        if (conf / "config.yaml").is_file() and (sweeps / MARKER).is_file():
            return conf, sweeps
    return None


class EifSweepsSearchPath(SearchPathPlugin):
    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        dirs = eif_dirs()
        if dirs is None:
            return
        conf, sweeps = dirs
        mains = [e.path for e in search_path.get_path() if e.provider == "main"]
        if any(Path(p.removeprefix("file://")).resolve() == conf for p in mains if p):
            search_path.append(provider="eif-sweeps", path=f"file://{sweeps}")
