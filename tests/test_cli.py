"""The pcsr command line, end to end on small images."""
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import official_file
from pcsr import checkpoint, cli
from pcsr.cli import main
from pcsr.model import PCSR, SRModel


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    torch.manual_seed(0)
    m = PCSR("fsrcnn", {"d": 8, "s": 4, "m": 1}, [[12, 12], [6]], [5])
    path = tmp_path_factory.mktemp("models") / "tiny.safetensors"
    checkpoint.save(m, path)
    return str(path)


@pytest.fixture(scope="module")
def original_path(tmp_path_factory):
    torch.manual_seed(1)
    m = SRModel("fsrcnn", {"d": 8, "s": 4, "m": 1, "scale": 4})
    path = tmp_path_factory.mktemp("models") / "orig.safetensors"
    checkpoint.save(m, path)
    return str(path)


def _img(path, mode="RGB", size=(23, 17)):
    rng = np.random.default_rng(0)
    chans = {"RGB": 3, "RGBA": 4, "L": 1}[mode]
    arr = (rng.random((size[1], size[0], chans)) * 255).astype(np.uint8)
    Image.fromarray(arr[..., 0] if chans == 1 else arr, mode).save(path)
    return str(path)


def test_upscale_one_image(tmp_path, model_path, capsys):
    src = _img(tmp_path / "a.png")
    out = tmp_path / "a_x4.png"
    cls = tmp_path / "a_classes.png"
    assert main(["upscale", src, "-o", str(out), "--model", model_path, "--save-classes", str(cls)]) == 0
    with Image.open(out) as im:
        assert im.size == (92, 68) and im.mode == "RGB"
    with Image.open(cls) as im:
        assert im.size == (92, 68)
    assert "heavy pixels" in capsys.readouterr().out


def test_upscale_several_keeps_alpha_and_grey(tmp_path, model_path):
    srcs = [_img(tmp_path / "rgb.jpg"), _img(tmp_path / "alpha.png", "RGBA"), _img(tmp_path / "grey.png", "L"),
            _img(tmp_path / "web.webp")]
    out = tmp_path / "out"
    out.mkdir()
    assert main(["upscale", *srcs, "-o", str(out), "--model", model_path, "--scale", "3", "--adaptive", "--no-refine"]) == 0
    modes = {p.name: Image.open(p).mode for p in out.iterdir()}
    assert modes == {"rgb.png": "RGB", "alpha.png": "RGBA", "grey.png": "L", "web.png": "RGB"}
    assert Image.open(out / "rgb.png").size == (69, 51)


@pytest.mark.parametrize("how", ["tile", "max-memory"])
def test_tiled_upscale_equals_whole_image(tmp_path, model_path, how):
    from pcsr import tiling

    src = _img(tmp_path / "big.png", size=(70, 45))
    if how == "tile":
        how = ["--tile", "16"]
    else:  # a budget just under the whole image's estimate: the CLI must split it into tiles
        model = checkpoint.load(model_path)
        budget = tiling.plan(model, (1, 3, 45, 70), 2).estimate.total - 1
        assert tiling.plan(model, (1, 3, 45, 70), 2, max_memory=budget).tiles > 1
        how = ["--max-memory", str(budget)]
    a, b = tmp_path / "whole.png", tmp_path / "tiled.png"
    assert main(["upscale", src, "-o", str(a), "--model", model_path, "--scale", "2"]) == 0
    assert main(["upscale", src, "-o", str(b), "--model", model_path, "--scale", "2", *how, "--progress"]) == 0
    x, y = np.asarray(Image.open(a), dtype=float), np.asarray(Image.open(b), dtype=float)
    assert x.shape == y.shape == (90, 140, 3)
    # exact tiles (pcsr.tiling): equal to float rounding, so at most one 8-bit level apart,
    # and only where a value sits on a rounding boundary
    assert np.abs(x - y).max() <= 1
    assert (x != y).mean() < 1e-3


@pytest.mark.parametrize("value", ["0", "-1G", "lots", "nan"])
def test_max_memory_must_be_a_size(tmp_path, model_path, value, capsys):
    src = _img(tmp_path / "a.png")
    with pytest.raises(SystemExit) as e:
        main(["upscale", src, "-o", str(tmp_path / "o.png"), "--model", model_path, "--max-memory", value])
    assert e.value.code == 2
    assert "--max-memory" in capsys.readouterr().err
    assert not (tmp_path / "o.png").exists()


def test_image_too_large_for_the_budget_is_reported(tmp_path, model_path, capsys):
    src = _img(tmp_path / "a.png", size=(70, 45))
    code = main(["upscale", src, "-o", str(tmp_path / "o.png"), "--model", model_path, "--scale", "4",
                 "--max-memory", "10K"])
    assert code == 1
    err = capsys.readouterr().err
    assert "does not fit" in err and "10240 bytes" in err and "o.png" not in [p.name for p in tmp_path.iterdir()]


def test_eval_writes_table_and_json(tmp_path, model_path, original_path, capsys):
    hr = _img(tmp_path / "hr.png", size=(41, 33))
    js = tmp_path / "r.json"
    assert main(["eval", hr, "--model", model_path, "--original", original_path, "--json", str(js), "--k", "0.5"]) == 0
    rec = json.loads(js.read_text())["records"][0]
    for key in ("image", "psnr", "gflops", "heavy_fraction", "seconds", "bicubic_psnr",
                "original_psnr", "original_gflops", "original_seconds"):
        assert key in rec
    assert rec["height"] == 32 and rec["width"] == 40  # centre-cropped to a multiple of 4
    assert 0 <= rec["heavy_fraction"] <= 1 and rec["gflops"] > 0
    assert "bicubic_psnr" in capsys.readouterr().out


def test_eval_reproduces_authors_fsrcnn_demo(tmp_path):
    js = tmp_path / "r.json"
    assert main(["eval", str(official_file("demo_HR.png")), "--model", str(official_file("fsrcnn-pcsr-phase1.pth")),
                 "--json", str(js)]) == 0
    rec = json.loads(js.read_text())["records"][0]
    assert rec["psnr"] == pytest.approx(28.47, abs=0.01) and rec["gflops"] == pytest.approx(17.67, rel=0.005)


@pytest.mark.parametrize("case", ["not_image", "missing_folder", "corrupt_model", "several_to_file", "missing_input",
                                  "original_as_model", "tile_fractional"])
def test_bad_input_fails_cleanly(tmp_path, model_path, original_path, case, capsys):
    src = _img(tmp_path / "a.png")
    out = tmp_path / "o.png"
    args = ["upscale", src, "-o", str(out), "--model", model_path]
    if case == "not_image":
        (tmp_path / "text.png").write_text("not an image")
        args[1] = str(tmp_path / "text.png")
        expect = "not a readable image"
    elif case == "missing_folder":
        args[3] = str(tmp_path / "nowhere" / "o.png")
        expect = "does not exist"
    elif case == "corrupt_model":
        bad = tmp_path / "bad.safetensors"
        bad.write_bytes(open(model_path, "rb").read()[:100])
        args[-1] = str(bad)
        expect = "corrupt or truncated"
    elif case == "several_to_file":
        args = ["upscale", src, _img(tmp_path / "b.png"), "-o", str(out), "--model", model_path]
        expect = "the output must be a folder"
    elif case == "missing_input":
        args[1] = str(tmp_path / "nope.png")
        expect = "no such file"
    elif case == "original_as_model":
        args[-1] = original_path
        expect = "not a PCSR model"
    else:
        args += ["--tile", "--scale", "2.5"]
        expect = "integer --scale"
    assert main(args) == 2
    assert expect in capsys.readouterr().err
    assert not out.exists() and not list(tmp_path.glob(".*.tmp"))


def test_k_and_adaptive_are_exclusive(tmp_path, model_path):
    with pytest.raises(SystemExit) as e:
        main(["upscale", _img(tmp_path / "a.png"), "-o", str(tmp_path / "o.png"), "--k", "1", "--adaptive"])
    assert e.value.code == 2


def test_console_script_is_installed(tmp_path, model_path):
    src = _img(tmp_path / "a.png")
    r = subprocess.run([sys.executable, "-m", "pcsr", "upscale", src, "-o", str(tmp_path / "b.png"), "--model", model_path],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "b.png").exists()


# --- batches that finish; errors as messages ---------------------------------------------------------

def test_folder_continues_past_a_bad_file_and_summarises(tmp_path, model_path, capsys):
    d = tmp_path / "in"
    d.mkdir()
    for name in ("a", "c"):
        _img(d / f"{name}.png")
    (d / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    out = tmp_path / "out"
    assert main(["upscale", str(d), "-o", str(out), "--model", model_path, "--scale", "2"]) == 1
    io = capsys.readouterr()
    assert sorted(p.name for p in out.iterdir()) == ["a.png", "c.png"]
    assert "2 written, 0 skipped (output exists), 1 failed" in io.out
    assert "b.png" in io.err and "not a readable image" in io.err and "Traceback" not in io.err
    # per-image lines: time and heavy fraction
    lines = [ln for ln in io.out.splitlines() if "->" in ln]
    assert len(lines) == 2 and all("% heavy pixels" in ln and ln.rstrip().endswith(" s)") for ln in lines)

    # told to stop, the same folder is refused before anything runs
    out2 = tmp_path / "out2"
    assert main(["upscale", str(d), "-o", str(out2), "--model", model_path, "--no-continue-on-error"]) == 2
    assert "b.png" in capsys.readouterr().err and not out2.exists()


def test_failure_while_running_costs_one_image(tmp_path, model_path, monkeypatch, capsys):
    from pcsr import upscale

    real = upscale._infer

    def flaky(model, lr, args, progress=None):
        if lr.shape[-1] == 7:
            raise RuntimeError("DefaultCPUAllocator: not enough memory")
        return real(model, lr, args, progress)

    monkeypatch.setattr(upscale, "_infer", flaky)
    srcs = [_img(tmp_path / "a.png"), _img(tmp_path / "b.png", size=(7, 5)), _img(tmp_path / "c.png")]
    out = tmp_path / "out"
    assert main(["upscale", *srcs, "-o", str(out), "--model", model_path]) == 1
    io = capsys.readouterr()
    assert sorted(p.name for p in out.iterdir()) == ["a.png", "c.png"]
    assert "b.png: DefaultCPUAllocator: not enough memory" in io.err and "1 failed" in io.out
    # stopping at the first error leaves the rest unrun, and says so
    out3 = tmp_path / "out3"
    assert main(["upscale", *srcs, "-o", str(out3), "--model", model_path, "--no-continue-on-error"]) == 1
    assert sorted(p.name for p in out3.iterdir()) == ["a.png"]
    assert "1 not run" in capsys.readouterr().out


def test_progress_bars(tmp_path, model_path, capsys):
    srcs = [_img(tmp_path / "a.png"), _img(tmp_path / "b.png")]
    out = tmp_path / "out"
    assert main(["upscale", *srcs, "-o", str(out), "--model", model_path, "--progress"]) == 0
    assert "2/2" in capsys.readouterr().err
    big = _img(tmp_path / "big.png", size=(70, 45))
    assert main(["upscale", big, "-o", str(tmp_path / "big2.png"), "--model", model_path, "--scale", "2",
                 "--tile", "32", "--progress"]) == 0
    assert "tile" in capsys.readouterr().err  # 3x2 tiles of one image
    assert main(["upscale", *srcs, "-o", str(tmp_path / "quiet"), "--model", model_path]) == 0
    assert "2/2" not in capsys.readouterr().err  # not a terminal: no bars unless asked


def test_version_and_models(capsys):
    import pcsr

    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.startswith(f"pcsr {pcsr.__version__} (torch ")
    assert main(["models"]) == 0
    lines = capsys.readouterr().out.splitlines()
    names = sorted(checkpoint.bundled_models())
    assert len(lines) == len(names)
    for line, name in zip(lines, names):
        m = checkpoint.load(name)
        params = sum(p.numel() for p in m.state_dict().values())
        assert line.startswith(name)
        assert f"{m.config['backbone'].upper()}-PCSR, trained x4, {params / 1e3:.1f}K parameters" in line
        assert "data: " in line and "wallpapers" in line


@pytest.mark.parametrize("case", ["backend_triton", "backend_env", "k_nan", "k_inf", "scale_small", "scale_nan",
                                  "scale_per_image", "tile_fractional", "config_bad_args", "config_negative",
                                  "config_not_json"])
def test_errors_are_messages_not_tracebacks(tmp_path, model_path, monkeypatch, capsys, case):
    """Each of these used to end in a traceback (exit 1) or to fail only after loading the model."""
    import pcsr_kernels

    src = _img(tmp_path / "a.png")
    args = ["upscale", src, "-o", str(tmp_path / "o.png"), "--model", model_path]
    loads = []
    monkeypatch.setattr(cli, "_load", lambda *a, **k: loads.append(a) or _real_cli_load(*a, **k))
    expect_loaded = False
    if case == "backend_triton":
        monkeypatch.delenv("TRITON_INTERPRET", raising=False)
        args += ["--backend", "triton"]
        expect = "--backend triton: pcsr backend 'triton' is not available"
    elif case == "backend_env":
        monkeypatch.setenv("PCSR_BACKEND", "fastest")
        expect = "unknown pcsr backend 'fastest'"
    elif case in ("k_nan", "k_inf"):
        args += ["--k", case[2:]]
        expect = "--k: must be a finite number"
    elif case == "scale_small":
        args += ["--scale", "0.01"]
        expect = "at least 1 pixel per side"
    elif case == "scale_nan":
        args += ["--scale", "nan"]
        expect = "--scale: must be a finite number"
    elif case == "scale_per_image":
        args += ["--scale", "0.04"]  # 17 px * 0.04 rounds to 1, 9 px side of this one to 0
        src2 = _img(tmp_path / "thin.png", size=(30, 9))
        args[1] = src2
        expect = "(30x9) at --scale 0.04 would be 1x0 pixels"
    elif case == "tile_fractional":
        args += ["--tile", "--scale", "2.5"]
        expect = "--tile needs an integer --scale"
    else:
        expect_loaded = True
        bad = tmp_path / "bad.safetensors"
        from safetensors.torch import save_file

        good = json.loads(_meta(model_path))
        if case == "config_bad_args":
            good["backbone_args"] = {"d": 8, "s": 4, "m": 1, "colour": "blue"}
            meta = json.dumps(good)
        elif case == "config_negative":
            good["upsamplers"] = [[-12, 12], [6]]
            meta = json.dumps(good)
        else:
            meta = "{not json"
        save_file({"x": torch.zeros(1)}, str(bad), metadata={"pcsr_config": meta})
        args[-1] = str(bad)
        expect = str(bad)
    try:
        rc = main(args)
    except SystemExit as e:  # argparse's own usage errors
        rc = e.code
    finally:
        pcsr_kernels.set_backend(None)
    err = capsys.readouterr().err
    assert rc == 2 and expect in err, err
    assert "Traceback" not in err and not (tmp_path / "o.png").exists()
    assert bool(loads) == expect_loaded  # refused before the model was loaded, where it can be


def _meta(path):
    from safetensors import safe_open

    with safe_open(path, framework="pt") as f:
        return f.metadata()["pcsr_config"]


_real_cli_load = cli._load


def test_sweep_without_matplotlib_says_how_to_install(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now fails
    hr = _img(tmp_path / "hr.png", size=(32, 32))
    assert main(["sweep", hr, "--out-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "matplotlib" in err and "pip install" in err
