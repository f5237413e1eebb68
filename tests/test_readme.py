"""The README's Python snippets run as written.

Every ```python block of README.md is executed on its own, in a fresh namespace, with the
working directory standing in for the root of a fresh clone (``python/`` is linked into a
temporary folder, so what the snippets write lands there). A block that loads one of the
authors' ``.pth`` files gets it from ``../shared`` (skipped when that is absent).
"""
from __future__ import annotations

import re

import pytest

from conftest import REPO, official_file

README = (REPO / "README.md").read_text()
BLOCKS = re.findall(r"^```python\n(.*?)^```", README, flags=re.S | re.M)


def test_readme_has_python_snippets():
    assert len(BLOCKS) >= 3


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_snippet_runs(index, tmp_path, monkeypatch):
    code = BLOCKS[index]
    (tmp_path / "python").symlink_to(REPO / "python")
    for name in sorted(set(re.findall(r"[\"']([\w.-]+\.pth)[\"']", code))):
        (tmp_path / name).symlink_to(official_file(name))
    monkeypatch.chdir(tmp_path)
    before = set(p.name for p in tmp_path.iterdir())
    exec(compile(code, f"README.md python block {index + 1}", "exec"), {"__name__": "__readme__"})
    written = set(p.name for p in tmp_path.iterdir()) - before
    for name in re.findall(r"write_image\(\"([^\"]+)\"", code):
        assert name in written  # what a snippet says it writes, it writes
