"""The torch.ops.pcsr contract: schemas, dispatch, fake kernels, torch.compile, backend
choice and argument validation. Backend-specific kernels have their own test files."""
import math

import pytest
import torch

import pcsr_kernels
from conftest import random_problem
from pcsr_kernels import backend, reference
from pcsr_kernels.schemas import SCHEMAS

CASES = [  # (B, D, h, w, H, W, hidden per branch, classifier hidden)
    (1, 6, 5, 7, 10, 14, [[16, 16], [8]], [8]),                 # x2
    (2, 5, 4, 5, 12, 15, [[12], [6], [4, 4]], []),              # x3, M=3
    (3, 4, 3, 5, 12, 20, [[8], [8], [4], [4]], [6]),           # x4, M=4
    (1, 6, 6, 4, 15, 10, [[10, 10], [5]], [7]),                # x2.5 (ties in the lookup)
    (2, 5, 5, 3, 19, 11, [[9], [3]], [5, 5]),                  # x3.7-ish, odd
]


@pytest.mark.parametrize("case", range(len(CASES)))
@pytest.mark.parametrize("k,adaptive", [(0.0, False), (50.0, False), (-50.0, False), (0.4, False), (0.0, True)])
@pytest.mark.parametrize("refine", [True, False])
def test_route_upsample_equals_reference(case, k, adaptive, refine):
    B, D, h, w, H, W, hidden, cls = CASES[case]
    p = random_problem(B, D, h, w, H, W, hidden, cls, seed=1000 * case + int(k) + adaptive)
    sr, classes = pcsr_kernels.route_upsample(**p, k=k, adaptive=adaptive, refine=refine)
    sr_r, classes_r = reference.route_upsample_ref(**p, k=k, adaptive=adaptive, refine=refine)
    assert sr.shape == (B, 3, H, W) and classes.shape == (B, H, W) and classes.dtype == torch.int64
    assert torch.equal(classes, classes_r)
    torch.testing.assert_close(sr, sr_r, rtol=1e-5, atol=1e-5)


def test_schemas_agree_with_compiled_extension():
    if not pcsr_kernels.extension_loaded():
        pytest.skip(f"extension not built: {pcsr_kernels.extension_error()}")
    for name, schema in SCHEMAS.items():
        assert str(getattr(torch.ops.pcsr, name).default._schema) == "pcsr::" + schema


def _small():
    return random_problem(2, 5, 4, 6, 9, 13, [[8], [4], [4]], [6], seed=7)


def test_opcheck_every_op():
    p = _small()
    args = (p["feat"], p["lr"], list(p["out_size"]), p["classifier"], p["upsamplers"], p["depths"], p["cost"])
    torch.library.opcheck(torch.ops.pcsr.route_upsample.default, args + (0.3, False, True))
    torch.library.opcheck(torch.ops.pcsr.route_upsample.default, args + (0.0, True, False))
    probs = pcsr_kernels.classify(p["feat"], p["out_size"], p["classifier"])
    torch.library.opcheck(torch.ops.pcsr.classify.default, (p["feat"], list(p["out_size"]), p["classifier"]))
    torch.library.opcheck(torch.ops.pcsr.route.default, (probs, p["cost"], 0.5, False))
    torch.library.opcheck(torch.ops.pcsr.route.default, (probs, p["cost"], 0.0, True))
    classes = pcsr_kernels.route(probs, p["cost"])
    torch.library.opcheck(torch.ops.pcsr.upsample.default, (p["feat"], p["lr"], classes, p["upsamplers"], p["depths"]))
    sr = pcsr_kernels.upsample(p["feat"], p["lr"], classes, p["upsamplers"], p["depths"])
    torch.library.opcheck(torch.ops.pcsr.refine.default, (sr, classes, 3))


def test_torch_compile_fullgraph_runs_through_the_op():
    p = _small()

    @torch.compile(fullgraph=True)
    def f(feat, lr, classifier, upsamplers, cost):
        sr, classes = torch.ops.pcsr.route_upsample(feat * 1.0, lr, [9, 13], classifier, upsamplers,
                                                    p["depths"], cost, 0.2, False, True)
        return sr + 1.0, classes

    sr, classes = f(p["feat"], p["lr"], p["classifier"], p["upsamplers"], p["cost"])
    sr_r, classes_r = reference.route_upsample_ref(**p, k=0.2)
    assert torch.equal(classes, classes_r)
    torch.testing.assert_close(sr, sr_r + 1.0)


def test_fake_kernels_give_shapes_on_meta():
    p = _small()
    meta = {k: ([t.to("meta") for t in v] if isinstance(v, list) and v and isinstance(v[0], torch.Tensor)
                else v.to("meta") if isinstance(v, torch.Tensor) else v) for k, v in p.items()}
    sr, classes = torch.ops.pcsr.route_upsample(meta["feat"], meta["lr"], [9, 13], meta["classifier"],
                                                meta["upsamplers"], meta["depths"], meta["cost"])
    assert sr.shape == (2, 3, 9, 13) and sr.device.type == "meta" and classes.dtype == torch.int64
    up = torch.ops.pcsr.upsample(meta["feat"], meta["lr"], classes, meta["upsamplers"], meta["depths"])
    assert up.shape == (2, 3, 9, 13) and up.device.type == "meta"
    # the fake kernel refuses an empty output as the real ones do
    with pytest.raises(ValueError, match=r"classes must be \[B, H, W\] with H, W > 0, got \(2, 0, 13\)"):
        torch.ops.pcsr.upsample(meta["feat"], meta["lr"], classes[:, :0], meta["upsamplers"], meta["depths"])


# --- backend choice ------------------------------------------------------------------

def test_backend_choice_errors_are_clear(monkeypatch):
    with pytest.raises(ValueError, match="unknown pcsr backend 'fast'"):
        pcsr_kernels.set_backend("fast")
    monkeypatch.setenv("PCSR_BACKEND", "nonsense")
    with pytest.raises(ValueError, match="PCSR_BACKEND"):
        backend.get_backend()
    monkeypatch.setenv("PCSR_BACKEND", "reference")
    assert backend.resolved_name("cpu") == "reference"
    monkeypatch.setenv("PCSR_BACKEND", "cuda")  # CUDA kernels never serve CPU tensors
    p = _small()
    with pytest.raises(RuntimeError, match="'cuda' is not available for cpu tensors"):
        pcsr_kernels.route_upsample(**p)


def test_use_backend_restores_previous_choice():
    pcsr_kernels.set_backend(None)
    with pcsr_kernels.use_backend("reference"):
        assert backend.get_backend() == "reference"
    assert backend.get_backend() in ("auto", backend.os.environ.get("PCSR_BACKEND", "auto"))


# --- validation ------------------------------------------------------------------------

def _call(**over):
    p = _small()
    p.update(over)
    return pcsr_kernels.route_upsample(**p)


@pytest.mark.parametrize("mutate,match", [
    (lambda p: {"feat": p["feat"][0]}, r"feat must have 4 dimensions, got shape \(5, 4, 6\)"),
    (lambda p: {"lr": p["lr"][:, :2]}, r"lr must be \[B, 3, h, w\] = \[2, 3, 4, 6\].*got \(2, 2, 4, 6\)"),
    (lambda p: {"lr": p["lr"][:1]}, r"lr must be \[B, 3, h, w\]"),
    (lambda p: {"lr": p["lr"].double()}, r"lr must be float32 \(as feat\)"),
    (lambda p: {"feat": p["feat"].long()}, r"feat must be floating point"),
    (lambda p: {"feat": p["feat"][:, :, :0]}, r"feat is empty"),
    (lambda p: {"out_size": (0, 5)}, r"out_size must be positive"),
    (lambda p: {"classifier": [p["classifier"][0][:, :-1]] + p["classifier"][1:]}, r"classifier: layer 0 weight has shape \(6, 8\) but its input width must be D\+4 = 9"),
    (lambda p: {"classifier": p["classifier"][:2] + [p["classifier"][2][:2], p["classifier"][3][:2]]}, r"classifier: last layer outputs 2 values, expected 3"),
    (lambda p: {"classifier": p["classifier"][:3]}, r"classifier must be a flat list"),
    (lambda p: {"upsamplers": p["upsamplers"][:-2]}, r"upsamplers holds 10 tensors but depths=\[2, 2, 2\] needs 2\*sum\(depths\) = 12"),
    (lambda p: {"depths": [2, 2, 1, 1]}, r"classifier: last layer outputs 3 values, expected 4"),
    (lambda p: {"depths": [2, 2, 3]}, r"upsamplers holds 12 tensors but depths=\[2, 2, 3\] needs 2\*sum\(depths\) = 14"),
    (lambda p: {"depths": [6]}, r"at least 2 branches"),
    (lambda p: {"upsamplers": p["upsamplers"][:2] + [p["upsamplers"][2][:2], p["upsamplers"][3][:2]] + p["upsamplers"][4:]}, r"upsamplers \(branch 0\): last layer outputs 2 values, expected 3"),
    (lambda p: {"cost": p["cost"][:2]}, r"cost must have one entry per branch: M = 3, got shape \(2,\)"),
    (lambda p: {"cost": torch.tensor([0.5, 0.0, 0.5])}, r"cost entries must be finite and > 0"),
    (lambda p: {"cost": torch.tensor([0.5, -1.0, 0.5])}, r"cost entries must be finite and > 0"),
    (lambda p: {"cost": torch.tensor([0.5, math.inf, 0.5])}, r"cost entries must be finite and > 0"),
    (lambda p: {"cost": torch.tensor([0.5, math.nan, 0.5])}, r"cost entries must be finite and > 0"),
    (lambda p: {"k": math.nan}, r"k must be finite, got nan"),
    (lambda p: {"k": math.inf}, r"k must be finite, got inf"),
    (lambda p: {"classifier": [t.double() for t in p["classifier"]]}, r"classifier\[0\] \(weight of layer 0\) must be float32"),
])
def test_bad_arguments_name_the_problem(mutate, match):
    p = _small()
    with pytest.raises((ValueError, TypeError), match=match):
        _call(**mutate(p))


def test_stage_ops_validate_classes():
    p = _small()
    bad = torch.full((2, 9, 13), 3, dtype=torch.int64)
    with pytest.raises(ValueError, match=r"classes must lie in \[0, M\) = \[0, 3\), got values in \[3, 3\]"):
        pcsr_kernels.upsample(p["feat"], p["lr"], bad, p["upsamplers"], p["depths"])
    with pytest.raises(ValueError, match=r"classes must be int64"):
        pcsr_kernels.refine(torch.rand(2, 3, 9, 13), bad.int(), 3)
    with pytest.raises(ValueError, match=r"classes must be \[B, H, W\] = \[2, 9, 13\], got \(2, 9, 12\)"):
        pcsr_kernels.refine(torch.rand(2, 3, 9, 13), bad[..., :12].clamp(max=2), 3)


@pytest.mark.parametrize("backend", ["reference", "cpu", "triton"])
def test_upsample_refuses_an_empty_output_on_every_backend(backend):
    ok, why = pcsr_kernels.backend.availability(backend, "cpu")
    if not ok:
        pytest.skip(why)
    p = _small()
    empty = torch.zeros(2, 0, 13, dtype=torch.int64)
    with pcsr_kernels.use_backend(backend), pytest.raises(
            ValueError, match=r"classes must be \[B, H, W\] with H, W > 0, got \(2, 0, 13\)"):
        pcsr_kernels.upsample(p["feat"], p["lr"], empty, p["upsamplers"], p["depths"])
