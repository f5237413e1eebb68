"""``pcsr bench``: runs ``benchmarks/compare.py`` of the source checkout with the given
arguments (``pcsr bench -h`` prints them). The benchmark lives beside the microbenchmarks
and the authors'-loop re-statement it compares with, not in the installed package; set
``PCSR_BENCHMARKS`` to the folder when the checkout is elsewhere.
"""
from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

from . import cli


def benchmarks_dir() -> Path | None:
    env = os.environ.get("PCSR_BENCHMARKS")
    d = Path(env) if env else Path(__file__).resolve().parents[2] / "benchmarks"
    return d if (d / "compare.py").is_file() else None


def load_compare():
    """The ``benchmarks/compare.py`` module of the checkout."""
    d = benchmarks_dir()
    if d is None:
        raise cli.UsageError("benchmarks/compare.py not found: pcsr bench needs a source checkout of pcsr "
                             "(pip install -e .) or PCSR_BENCHMARKS=<its benchmarks folder>")
    spec = importlib.util.spec_from_file_location("pcsr_benchmarks_compare", d / "compare.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


def cmd_bench(args) -> int:
    compare = load_compare()
    return compare.main(args.bench_args, prog="pcsr bench")


def add_arguments(p) -> None:
    """Fill the ``pcsr bench`` parser (made with prefix_chars="+", see pcsr.cli.COMMANDS):
    every argument goes to compare.py."""
    p.add_argument("bench_args", nargs="*")
    p.set_defaults(func=cmd_bench)
