"""`pcsr upscale` never loses a file: every refusal exits 2 with a message naming the files,
leaves every input's bytes as they were and writes nothing; re-runs are explicit
(--overwrite, --skip-existing); writes are atomic and leave no temporary file behind."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pcsr import checkpoint, cli
from pcsr.atomic import TargetError, atomic_path, check_target
from pcsr.cli import main
from pcsr.model import PCSR


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    torch.manual_seed(0)
    m = PCSR("fsrcnn", {"d": 8, "s": 4, "m": 1}, [[12, 12], [6]], [5])
    path = tmp_path_factory.mktemp("models") / "tiny.safetensors"
    checkpoint.save(m, path)
    return str(path)


def _img(path: Path, size=(13, 9), seed=0, fmt=None) -> Path:
    arr = (np.random.default_rng(seed).random((size[1], size[0], 3)) * 255).astype(np.uint8)
    Image.fromarray(arr).save(path, format=fmt)
    return path


def _state(root: Path) -> dict[str, str]:
    """Every entry under root: file -> sha256, link -> its target, anything else -> its kind."""
    out = {}
    for p in sorted(root.rglob("*")):
        key = str(p.relative_to(root))
        if p.is_symlink():
            out[key] = "link:" + os.readlink(p)
        elif p.is_file():
            out[key] = hashlib.sha256(p.read_bytes()).hexdigest()
        else:
            out[key] = "dir" if p.is_dir() else "other"
    return out


@pytest.fixture
def never_load(monkeypatch):
    """Refusals happen before the model is loaded: loading it fails the test."""
    def fail(*a, **k):
        raise AssertionError("the model was loaded before the refusal")
    monkeypatch.setattr(cli, "_load", fail)


def _refused(args, root: Path, expect: str, capsys) -> str:
    before = _state(root)
    assert main(args) == 2
    err = capsys.readouterr().err
    assert expect in err, err
    assert "Traceback" not in err
    assert _state(root) == before  # inputs' checksums unchanged, nothing written, no temp file
    return err


def test_output_is_the_input(tmp_path, model_path, never_load, capsys, monkeypatch):
    a = _img(tmp_path / "a.png")
    _refused(["upscale", str(a), "-o", str(a), "--model", model_path, "--overwrite"], tmp_path,
             "would overwrite the input", capsys)
    monkeypatch.chdir(tmp_path)  # ./a.png and a.png are one file
    _refused(["upscale", "a.png", "-o", "./a.png", "--model", model_path, "--overwrite"], tmp_path,
             "would overwrite the input", capsys)


def test_output_is_a_hard_link_of_the_input(tmp_path, model_path, never_load, capsys):
    a = _img(tmp_path / "a.png")
    os.link(a, tmp_path / "b.png")
    _refused(["upscale", str(a), "-o", str(tmp_path / "b.png"), "--model", model_path, "--overwrite"], tmp_path,
             "would overwrite the input", capsys)


def test_output_through_a_symlinked_folder_is_the_input(tmp_path, model_path, never_load, capsys):
    d = tmp_path / "d"
    d.mkdir()
    a = _img(d / "a.png")
    (tmp_path / "alias").symlink_to(d)
    _refused(["upscale", str(a), "-o", str(tmp_path / "alias" / "a.png"), "--model", model_path, "--overwrite"],
             tmp_path, "would overwrite the input", capsys)


def test_folder_in_place_with_two_formats_of_one_name(tmp_path, model_path, never_load, capsys):
    d = tmp_path / "d"
    d.mkdir()
    _img(d / "a.png")
    _img(d / "a.jpg", seed=1, fmt="JPEG")
    err = _refused(["upscale", str(d), "-o", str(d), "--model", model_path, "--overwrite"], tmp_path,
                   "refusing to lose a file", capsys)
    assert "would all be written to" in err and "would overwrite the input" in err and "--suffix" in err


def test_two_inputs_one_output(tmp_path, model_path, never_load, capsys):
    for sub in ("a", "b"):
        (tmp_path / sub).mkdir()
        _img(tmp_path / sub / "x.png", seed=len(sub))
    (tmp_path / "out").mkdir()
    err = _refused(["upscale", str(tmp_path / "a" / "x.png"), str(tmp_path / "b" / "x.png"), "-o",
                    str(tmp_path / "out"), "--model", model_path], tmp_path, "would all be written to", capsys)
    assert "a/x.png" in err and "b/x.png" in err


def test_class_map_and_image_share_a_path(tmp_path, model_path, never_load, capsys):
    a = _img(tmp_path / "a.png")
    p = str(tmp_path / "p.png")
    _refused(["upscale", str(a), "-o", p, "--save-classes", p, "--model", model_path], tmp_path,
             "would share the path", capsys)
    _refused(["upscale", str(a), "-o", p, "--save-classes", str(a), "--model", model_path, "--overwrite"], tmp_path,
             "the class map", capsys)


@pytest.mark.parametrize("kind", ["symlink", "dangling", "fifo"])
def test_target_that_is_not_a_regular_file_is_never_replaced(tmp_path, model_path, never_load, capsys, kind):
    a = _img(tmp_path / "a.png")
    other = _img(tmp_path / "other.png", seed=3)
    t = tmp_path / "t.png"
    if kind == "symlink":
        t.symlink_to(other)
    elif kind == "dangling":
        t.symlink_to(tmp_path / "nowhere.png")
    else:
        os.mkfifo(t)
    for flag in ("--overwrite", "--skip-existing"):
        _refused(["upscale", str(a), "-o", str(t), "--model", model_path, flag], tmp_path,
                 "symbolic link" if kind != "fifo" else "not a regular file", capsys)
    assert t.is_symlink() if kind != "fifo" else t.is_fifo()


def test_devices_and_links_are_refused_by_the_atomic_writer(tmp_path):
    with pytest.raises(TargetError, match="not a regular file"):
        check_target("/dev/null")  # (checked, never written: as root a rename would replace it)
    (tmp_path / "l").symlink_to(tmp_path / "x")
    with pytest.raises(TargetError, match="symbolic link"):
        with atomic_path(tmp_path / "l") as tmp:
            Path(tmp).write_text("x")
    assert (tmp_path / "l").is_symlink() and not (tmp_path / "x").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["l"]


def test_existing_output_is_refused_then_replaced_or_skipped(tmp_path, model_path, capsys):
    a, b = _img(tmp_path / "a.png"), _img(tmp_path / "b.png", seed=1)
    out = tmp_path / "out"
    out.mkdir()
    old = _img(out / "a.png", size=(5, 5), seed=9)
    err = _refused(["upscale", str(a), str(b), "-o", str(out), "--model", model_path], tmp_path, "exist", capsys)
    assert str(old) in err and "--overwrite" in err and "--skip-existing" in err

    before = hashlib.sha256(old.read_bytes()).hexdigest()
    assert main(["upscale", str(a), str(b), "-o", str(out), "--model", model_path, "--skip-existing"]) == 0
    assert hashlib.sha256(old.read_bytes()).hexdigest() == before  # kept
    assert Image.open(out / "b.png").size == (52, 36)  # the rest done
    assert "1 written, 1 skipped" in capsys.readouterr().out

    assert main(["upscale", str(a), str(b), "-o", str(out), "--model", model_path, "--overwrite"]) == 0
    assert Image.open(out / "a.png").size == (52, 36)
    with pytest.raises(SystemExit) as e:
        main(["upscale", str(a), "-o", str(out / "a.png"), "--model", model_path, "--overwrite", "--skip-existing"])
    assert e.value.code == 2


def test_suffix_in_place_and_rerun(tmp_path, model_path, capsys):
    d = tmp_path / "d"
    d.mkdir()
    _img(d / "a.png")
    _img(d / "b.png", seed=1)
    assert main(["upscale", str(d), "-o", str(d), "--suffix", "_x2", "--scale", "2", "--model", model_path]) == 0
    assert sorted(p.name for p in d.iterdir()) == ["a.png", "a_x2.png", "b.png", "b_x2.png"]
    state = _state(tmp_path)
    capsys.readouterr()
    # the re-run does not take its own outputs as inputs (no a_x2_x2.png) and keeps what exists
    assert main(["upscale", str(d), "-o", str(d), "--suffix", "_x2", "--scale", "2", "--model", model_path,
                 "--skip-existing"]) == 0
    assert _state(tmp_path) == state
    io = capsys.readouterr()
    assert "0 written, 2 skipped" in io.out and "own outputs" in io.err


@pytest.mark.parametrize("out", ["o.xyz", "o", "o.gif"])
def test_unknown_or_missing_extension(tmp_path, model_path, never_load, capsys, out):
    a = _img(tmp_path / "a.png")
    _refused(["upscale", str(a), "-o", str(tmp_path / out), "--model", model_path], tmp_path,
             "the output format comes from the extension", capsys)


@pytest.mark.parametrize("when", ["exception", "interrupt"])
def test_failed_write_leaves_no_file(tmp_path, model_path, monkeypatch, capsys, when):
    a = _img(tmp_path / "a.png")
    old = _img(tmp_path / "o.png", seed=5)
    before = _state(tmp_path)

    def broken_save(self, fp, format=None, **kw):
        Path(fp).write_bytes(b"partial")  # a half-written file, then the failure
        raise KeyboardInterrupt if when == "interrupt" else OSError(28, "No space left on device")

    monkeypatch.setattr(Image.Image, "save", broken_save)
    rc = main(["upscale", str(a), "-o", str(old), "--model", model_path, "--overwrite"])
    assert rc == (130 if when == "interrupt" else 1)
    err = capsys.readouterr().err
    assert ("interrupted" if when == "interrupt" else "No space left") in err
    assert _state(tmp_path) == before  # the old output intact, no temporary file


def test_class_maps_in_the_input_folder_are_not_taken_as_inputs_again(tmp_path, model_path, capsys):
    d = tmp_path / "d"
    d.mkdir()
    _img(d / "a.png")
    out = tmp_path / "out"
    assert main(["upscale", str(d), "-o", str(out), "--save-classes", str(d), "--model", model_path]) == 0
    assert sorted(p.name for p in d.iterdir()) == ["a.png", "a_classes.png"]
    state = _state(tmp_path)
    assert main(["upscale", str(d), "-o", str(out), "--save-classes", str(d), "--model", model_path,
                 "--skip-existing"]) == 0
    assert _state(tmp_path) == state and "own outputs: " in capsys.readouterr().err
