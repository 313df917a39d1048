"""Every command in a fenced shell block of README.md and docs/*.md runs as written, up to composing its
config: the arguments pass Hydra's own command-line parser (options before overrides), and the config
composes with Hydra's compose API, once per value of every swept parameter (``a,b,c`` on the command
line and ``hydra.sweeper.params`` of a sweep config). ``local=mycluster`` gets the file the docs tell
the reader to create (a copy of ``conf/local/example_cluster.yaml``). ``eif dashboard`` commands go
through the dashboard's own argument parser."""

from __future__ import annotations

import re
import shlex
import shutil
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra._internal.utils import get_args_parser
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser

import eif.resolvers  # noqa: F401 - the configs' resolvers

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SHELL = {"bash", "sh", "shell", "console"}
COMMAND = re.compile(r"^(?:\S*python\S* launch\.py|eif)(?:\s|$)")
LOCAL_NAME = "mycluster"  # the name the docs use for the reader's copy of example_cluster.yaml


def documented_commands() -> list[tuple[str, str]]:
    """(where, command) for each `python launch.py ...` / `eif ...` line of a fenced shell block, with
    backslash continuations joined."""
    found = []
    for doc in DOCS:
        lang, buf = None, ""
        for n, line in enumerate(doc.read_text().splitlines(), 1):
            stripped = line.strip()
            if stripped.startswith("```"):
                lang = None if lang is not None else (stripped[3:].strip() or "text")
                continue
            if lang not in SHELL:
                continue
            buf = f"{buf} {stripped}" if buf else stripped
            if buf.endswith("\\"):
                buf = buf[:-1].rstrip()
                continue
            command, buf = buf, ""
            if COMMAND.match(command):
                found.append((f"{doc.relative_to(ROOT)}:{n}", command))
    return found


COMMANDS = documented_commands()


def test_the_docs_have_commands():
    assert len(COMMANDS) >= 20
    assert any("-m" in shlex.split(c, comments=True) for _, c in COMMANDS)


@pytest.fixture(scope="module")
def config_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of conf/ with conf/local/mycluster.yaml made as the docs say (cp example_cluster.yaml), and
    the sweep configs beside config.yaml, where the eif app finds them (its search path plugin; the
    compose API's search path is fixed before a primary config outside it could be looked up)."""
    conf = tmp_path_factory.mktemp("docs") / "conf"
    shutil.copytree(ROOT / "conf", conf)
    shutil.copytree(ROOT / "sweeps", conf, dirs_exist_ok=True)
    shutil.copy(conf / "local" / "example_cluster.yaml", conf / "local" / f"{LOCAL_NAME}.yaml")
    return conf


def _variants(overrides: list[str], sweep_params: dict[str, str]) -> list[list[str]]:
    """One override list per value of the widest sweep, every swept value appearing at least once."""
    parser = OverridesParser.create()
    fixed, swept = [], {}
    for text in [*overrides, *(f"{k}={v}" for k, v in sweep_params.items())]:
        override = parser.parse_override(text)
        if override.is_sweep_override():
            swept[override.get_key_element()] = list(override.sweep_string_iterator())
        else:
            fixed.append(text)
    width = max((len(v) for v in swept.values()), default=1)
    return [fixed + [f"{k}={v[i % len(v)]}" for k, v in swept.items()] for i in range(width)]


def _compose(conf: Path, name: str, overrides: list[str]):
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(conf)):
        return compose(name, overrides=overrides, return_hydra_config=True)


@pytest.mark.parametrize(("where", "command"), COMMANDS, ids=[w for w, _ in COMMANDS])
def test_documented_command_composes(where: str, command: str, config_dir: Path):
    argv = shlex.split(command, comments=True)
    argv = argv[2:] if argv[0] != "eif" else argv[1:]
    if argv[:1] == ["dashboard"]:
        from eif.dashboard import parse_args

        parse_args(argv[1:])
        return
    try:
        args = get_args_parser().parse_args(argv)
    except SystemExit:
        pytest.fail(f"{where}: Hydra's command line rejects {command!r} (options must precede overrides)")
    assert args.config_dir in (None, "sweeps"), f"{where}: --config-dir {args.config_dir} is not eif's"
    name = args.config_name or "config"
    first = _compose(config_dir, name, _variants(args.overrides, {})[0])
    params = dict(first.hydra.sweeper.params or {}) if args.multirun else {}
    if not args.multirun:
        assert len(_variants(args.overrides, {})) == 1, f"{where}: a sweep ({command!r}) needs -m"
    for overrides in _variants(args.overrides, params):
        cfg = _compose(config_dir, name, overrides)
        assert "stages" in cfg, f"{where}: {command!r} composed without stages"
