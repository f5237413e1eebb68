"""The CLI's subcommand table (``pcsr.cli.COMMANDS``): ``pcsr --help`` imports no torch and
no subcommand module; each subcommand's module is imported when that subcommand runs."""
from __future__ import annotations

import subprocess
import sys

import pytest

from conftest import REPO

# What a fresh interpreter imports for `pcsr --help`, run the way the console script runs it.
_PROBE = """
import sys
from pcsr.cli import main
try:
    main(sys.argv[1:])
except SystemExit:
    pass
print("IMPORTED", sorted(m for m in sys.modules if m == "torch" or m.startswith("pcsr")))
"""


def _imported(*argv: str) -> tuple[str, list[str]]:
    env_path = f"{REPO}:{REPO / 'python'}"
    out = subprocess.run([sys.executable, "-c", _PROBE, *argv], capture_output=True, text=True, timeout=120,
                         env={"PYTHONPATH": env_path, "PATH": "/usr/bin:/bin"}, cwd=REPO)
    assert out.returncode == 0, out.stderr
    line = [ln for ln in out.stdout.splitlines() if ln.startswith("IMPORTED ")][-1]
    return out.stdout, eval(line.removeprefix("IMPORTED "))  # a printed list of str


def test_help_imports_no_torch_and_no_subcommand_module():
    text, mods = _imported("--help")
    from pcsr.cli import COMMANDS

    for name in COMMANDS:
        assert name in text  # every subcommand is listed with its help
    assert "torch" not in mods
    assert mods == ["pcsr", "pcsr.cli"]


def test_a_subcommand_imports_its_own_module_only():
    _, mods = _imported("models", "--help")
    assert "pcsr.catalog" in mods
    assert not {"pcsr.train", "pcsr.sweep", "pcsr.bench"} & set(mods)


@pytest.mark.parametrize("name,option", [("upscale", "--save-classes"), ("eval", "--repeat"), ("models", None),
                                         ("bench", "bench_args"), ("sweep", "--out-dir"), ("train", "--heavy-share")])
def test_every_subcommand_fills_its_parser(name, option):
    from pcsr import cli

    parser = cli.build_parser([name])
    sub = next(a for a in parser._actions if a.dest == "command").choices[name]
    assert sub.get_default("func") is not None
    if option is not None:
        assert any(option in a.option_strings or a.dest == option for a in sub._actions)


def test_full_parser_parses_every_subcommand():
    from pcsr import cli

    parser = cli.build_parser()  # all filled, as benchmarks/bench_video.py uses it
    args = parser.parse_args(["train", "data", "--out", "o"])
    assert args.func.__module__ == "pcsr.train"
    assert parser.parse_args(["bench", "--sizes", "1k"]).bench_args == ["--sizes", "1k"]


def test_lazy_package_attributes():
    import pcsr

    assert set(pcsr.__all__) <= set(dir(pcsr))
    assert pcsr.load.__module__ == "pcsr.checkpoint" and pcsr.PCSR.__module__ == "pcsr.model"
    with pytest.raises(AttributeError, match="no attribute 'nonexistent'"):
        pcsr.nonexistent  # noqa: B018
