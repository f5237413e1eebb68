"""Checkpoints: the authors' files, the project's safetensors format, and bad files."""
import copy
import json
import pickle
import zipfile

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import official_file
from pcsr import checkpoint
from pcsr.checkpoint import CheckpointError
from pcsr.model import PCSR, SRModel


def _tiny(M=3):
    return PCSR("fsrcnn", {"d": 8, "s": 4, "m": 1}, [[12, 12], [6], [4]][:M], [5])


def test_roundtrip_keeps_weights_and_config(tmp_path):
    m = _tiny()
    path = tmp_path / "m.safetensors"
    checkpoint.save(m, path, info={"note": "unit test"})
    m2 = checkpoint.load(path)
    assert isinstance(m2, PCSR) and m2.num_branches == 3
    for (k, a), (k2, b) in zip(m.state_dict().items(), m2.state_dict().items()):
        assert k == k2 and torch.equal(a, b)
    assert m2.checkpoint_info["note"] == "unit test"
    lr = torch.rand(1, 3, 6, 5)
    torch.testing.assert_close(m.eval()(lr, scale=2)[0], m2(lr, scale=2)[0])
    assert not list(tmp_path.glob(".*.tmp"))  # atomic write left no temp file


@pytest.mark.parametrize("low_byte", [0x80, 0x50])
def test_safetensors_header_length_is_not_mistaken_for_pickle(tmp_path, low_byte):
    # A safetensors file starts with its header length (u64, little endian); when the low
    # byte is 0x80 the file begins like a legacy pickle and must still load as safetensors.
    m = _tiny()
    path = tmp_path / "m.safetensors"
    checkpoint.save(m, path)
    raw = path.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    header = raw[8:8 + n].rstrip(b" ")
    pad = (low_byte - len(header)) % 256
    header += b" " * pad  # JSON allows trailing spaces; safetensors pads its header the same way
    assert len(header) % 256 == low_byte and len(header) % 8 == 0
    path.write_bytes(len(header).to_bytes(8, "little") + header + raw[8 + n:])
    m2 = checkpoint.load(path)
    for a, b in zip(m.state_dict().values(), m2.state_dict().values()):
        assert torch.equal(a, b)


def test_authors_pcsr_checkpoint_maps_branch_order():
    """Their classifier outputs (light, heavy); ours (heavy, light): same decisions."""
    m = checkpoint.load(official_file("fsrcnn-pcsr-phase1.pth"))
    ck = torch.load(official_file("fsrcnn-pcsr-phase1.pth"), map_location="cpu", weights_only=True)["model"]["sd"]
    assert torch.equal(m.upsamplers[0].layers[0].weight, ck["heavy_sampler.imnet.layers.0.weight"])
    assert torch.equal(m.upsamplers[1].layers[0].weight, ck["light_sampler.imnet.layers.0.weight"])
    assert torch.equal(m.classifier.layers[0].weight[0], ck["classifier.imnet.layers.0.weight"][1])
    assert m.upsamplers[0].widths == [52, 58, 58, 58, 58, 3] and m.upsamplers[1].widths == [52, 10, 10, 10, 3]


def test_authors_original_checkpoint_loads():
    m = checkpoint.load(official_file("carn-x4.pth"))
    assert isinstance(m, SRModel) and m.scale == 4
    assert sum(p.numel() for p in m.parameters()) == 294915


def test_truncated_file_is_refused(tmp_path):
    m = _tiny()
    good = tmp_path / "m.safetensors"
    checkpoint.save(m, good)
    bad = tmp_path / "cut.safetensors"
    bad.write_bytes(good.read_bytes()[:200])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        checkpoint.load(bad)


def test_truncated_torch_file_is_refused(tmp_path):
    path = tmp_path / "cut.pth"
    torch.save({"model": {"name": "fsrcnn", "args": {}, "sd": {"w": torch.zeros(1000)}}}, path)
    path.write_bytes(path.read_bytes()[:300])
    with pytest.raises(CheckpointError, match="not a readable PyTorch checkpoint"):
        checkpoint.load(path)


def test_foreign_checkpoints_are_refused(tmp_path):
    p1 = tmp_path / "resnet.pth"
    torch.save({"state_dict": {"conv.weight": torch.zeros(3)}}, p1)
    with pytest.raises(CheckpointError, match=r"not a PCSR checkpoint: expected \{'model'"):
        checkpoint.load(p1)
    from safetensors.torch import save_file

    p2 = tmp_path / "other.safetensors"
    save_file({"x": torch.zeros(2)}, str(p2))
    with pytest.raises(CheckpointError, match="without a pcsr_config entry"):
        checkpoint.load(p2)
    p3 = tmp_path / "edsr.pth"
    torch.save({"model": {"name": "edsr", "args": {}, "sd": {}}}, p3)
    with pytest.raises(CheckpointError, match="unsupported model 'edsr'"):
        checkpoint.load(p3)


def test_full_pickle_is_never_executed(tmp_path, capsys):
    """A pickle that would run code on load is refused by weights_only=True."""
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    path = tmp_path / "evil.pth"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", pickle.dumps({"model": Evil()}))
        z.writestr("archive/version", "3\n")
    with pytest.raises(CheckpointError):
        checkpoint.load(path)
    assert "pwned" not in capsys.readouterr().out


def test_weights_that_do_not_fit_are_refused(tmp_path):
    m = _tiny()
    path = tmp_path / "m.safetensors"
    checkpoint.save(m, path)
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
        state = {k: f.get_tensor(k) for k in f.keys()}
    state["upsamplers.0.layers.0.weight"] = torch.zeros(3, 3)
    save_file(state, str(path), metadata=meta)
    with pytest.raises(CheckpointError, match=r"upsamplers.0.layers.0.weight has shape \(3, 3\)"):
        checkpoint.load(path)


def test_unknown_name_lists_bundled_models():
    with pytest.raises(CheckpointError, match="no such file, and no bundled model of that name"):
        checkpoint.load("no-such-model")


def test_save_to_missing_folder_fails_cleanly(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        checkpoint.save(_tiny(), tmp_path / "nope" / "m.safetensors")


# --- hostile and malformed files: refused before anything is built --------------------------

def _write(path, state, config):
    """A safetensors file holding ``state`` and any JSON-able (or raw string) config."""
    from safetensors.torch import save_file

    text = config if isinstance(config, str) else json.dumps(config)
    save_file({k: v.detach().contiguous() for k, v in state.items()}, str(path), metadata={"pcsr_config": text})
    return path


@pytest.fixture
def tiny_file(tmp_path):
    m = _tiny(M=2)
    return m, checkpoint.model_config(m), {k: v.clone() for k, v in m.state_dict().items()}


@pytest.fixture
def builds(monkeypatch):
    """Every device schema.build is called with: a real model must never be built (and so
    its weights allocated) before the checks pass."""
    from pcsr import schema

    seen = []
    real = schema.build

    def spy(config, device="cpu"):
        seen.append(str(device))
        return real(config, device)

    monkeypatch.setattr(schema, "build", spy)
    return seen


def test_oversized_config_is_refused_before_any_allocation(tiny_file, tmp_path, builds):
    """The issue's file: tiny tensors, a config asking for 30000-wide layers (gigabytes)."""
    m, config, state = tiny_file
    path = _write(tmp_path / "huge.safetensors", state, {**config, "upsamplers": [[30000] * 4, [10] * 3]})
    assert path.stat().st_size < 20_000
    with pytest.raises(CheckpointError, match=r"upsamplers\[0\]\[0\]: expected an integer in 1..4096, got 30000") as e:
        checkpoint.load(path)
    assert e.value.field == "upsamplers[0][0]" and builds == []


def test_parameter_ceiling_is_checked_on_the_meta_device(tiny_file, tmp_path, builds):
    # every width within range, but 4 branches of 8 hidden layers of 4096 are 470M parameters
    m, config, state = tiny_file
    path = _write(tmp_path / "big.safetensors", state, {**config, "upsamplers": [[4096] * 8] * 4})
    D = 8  # the tiny FSRCNN's feature width; each MLP reads D + 4 values
    branch = (D + 4) * 4096 + 4096 + 7 * (4096 * 4096 + 4096) + 4096 * 3 + 3
    classifier = (D + 4) * 5 + 5 + 5 * 4 + 4  # hidden [5], one logit per branch
    small = sum(v.numel() for k, v in state.items() if k.startswith("backbone.")) + classifier
    with pytest.raises(CheckpointError, match=rf"upsamplers\[0\]: the config describes {4 * branch + small:,} "
                                              rf"parameters \({branch:,} from upsamplers\[0\]\), above the ceiling "
                                              r"of 50,000,000") as e:
        checkpoint.load(path)
    assert e.value.field == "upsamplers[0]" and builds == ["meta"]


def test_config_that_disagrees_with_the_header_names_the_field(tiny_file, tmp_path, builds):
    m, config, state = tiny_file
    path = _write(tmp_path / "w.safetensors", state, {**config, "upsamplers": [[100, 100], [6]]})
    with pytest.raises(CheckpointError, match=r"upsamplers\[0\]: upsamplers.0.layers.0.weight has shape \(12, 12\) in "
                                              r"the file, the config \(upsamplers\[0\] = \[100, 100\]\) implies") as e:
        checkpoint.load(path)
    assert e.value.field == "upsamplers[0]" and builds == ["meta"]
    path = _write(tmp_path / "b.safetensors", state, {**config, "backbone_args": {"d": 9, "s": 4, "m": 1}})
    with pytest.raises(CheckpointError, match="backbone_args: backbone.head_conv.0.weight has shape"):
        checkpoint.load(path)
    three = _write(tmp_path / "m3.safetensors", state, {**config, "upsamplers": [[12, 12], [6], [4]]})
    with pytest.raises(CheckpointError, match=r"upsamplers\[2\]: the weights do not fit .* missing \['upsamplers.2"):
        checkpoint.load(three)
    extra = dict(state, **{"stray.weight": torch.zeros(2)})
    with pytest.raises(CheckpointError, match=r"unexpected \['stray.weight'\]"):
        checkpoint.load(_write(tmp_path / "x.safetensors", extra, config))
    ints = dict(state, **{"upsamplers.0.layers.0.weight": state["upsamplers.0.layers.0.weight"].to(torch.int32)})
    with pytest.raises(CheckpointError, match="upsamplers.0.layers.0.weight has dtype torch.int32"):
        checkpoint.load(_write(tmp_path / "i.safetensors", ints, config))


DEEP = "[" * 100_000 + "]" * 100_000


@pytest.mark.parametrize("mutate,field,message", [
    (lambda c: [c], "config", "expected a JSON object, got list"),
    (lambda c: '"pcsr"', "config", "expected a JSON object, got str"),
    (lambda c: None, "config", "expected a JSON object, got NoneType"),
    (lambda c: DEEP, "pcsr_config", "nested too deeply"),
    (lambda c: '{"format": "pcsr", "version": ' + DEEP + "}", "pcsr_config", "nested too deeply"),
    (lambda c: "{not json", "pcsr_config", "not valid JSON"),
    (lambda c: {**c, "version": "abc"}, "version", "expected a positive integer, got str 'abc'"),
    (lambda c: {**c, "version": 2}, "version", "written by a newer pcsr"),
    (lambda c: {**c, "version": True}, "version", "expected a positive integer, got bool"),
    (lambda c: {k: v for k, v in c.items() if k != "version"}, "version", "missing"),
    (lambda c: {**c, "format": "onnx"}, "format", "expected 'pcsr'"),
    (lambda c: {**c, "kind": "gan"}, "kind", "expected one of 'pcsr', 'original'"),
    (lambda c: {**c, "rgb_mean": [0.1, 0.2]}, "rgb_mean", "expected a list of 3 numbers .* got length 2"),
    (lambda c: {**c, "rgb_mean": [0.1, float("nan"), 0.2]}, "rgb_mean[1]", "expected a finite number, got nan"),
    (lambda c: {**c, "rgb_std": [1, 0, 1]}, "rgb_std[1]", "expected a number > 0"),
    (lambda c: {**c, "rgb_std": "1"}, "rgb_std", "expected a list of 3 numbers"),
    (lambda c: {**c, "upsamplers": [[12, 12]]}, "upsamplers", "expected 2..16 branches, got 1"),
    (lambda c: {**c, "upsamplers": [[12]] * 17}, "upsamplers", "expected 2..16 branches, got 17"),
    (lambda c: {**c, "upsamplers": {"0": [12]}}, "upsamplers", "expected a list of branches"),
    (lambda c: {**c, "upsamplers": [[12, 12.5], [6]]}, "upsamplers[0][1]", "got float 12.5"),
    (lambda c: {**c, "upsamplers": [[12, True], [6]]}, "upsamplers[0][1]", "got bool True"),
    (lambda c: {**c, "upsamplers": [[12, -3], [6]]}, "upsamplers[0][1]", "expected an integer in 1..4096, got -3"),
    (lambda c: {**c, "upsamplers": [[12, 12], [6] * 33]}, "upsamplers[1]", "at most 32 hidden layers, got 33"),
    (lambda c: {**c, "upsamplers": [[12, 12], "6"]}, "upsamplers[1]", "expected a list of hidden widths"),
    (lambda c: {k: v for k, v in c.items() if k != "classifier"}, "classifier", "missing"),
    (lambda c: {**c, "classifier": None}, "classifier", "expected a list of hidden widths, got NoneType"),
    (lambda c: {**c, "backbone": "edsr"}, "backbone", "expected one of 'fsrcnn', 'carn', 'srresnet'"),
    (lambda c: {**c, "backbone": ["fsrcnn"]}, "backbone", "expected one of"),
    (lambda c: {**c, "backbone_args": [8, 4]}, "backbone_args", "expected an object of arguments, got list"),
    (lambda c: {**c, "backbone_args": {"d": 8, "nb": 3}}, "backbone_args.nb", "unknown argument of the fsrcnn"),
    (lambda c: {**c, "backbone_args": {"d": 10 ** 30}}, "backbone_args.d", "expected an integer in 1..1024"),
    (lambda c: {**c, "backbone_args": {"d": 8, "scale": 4, "upscale": 2}}, "backbone_args.upscale", "disagrees"),
    (lambda c: {**c, "backbone": "carn", "backbone_args": {"nf": 10, "group": 4}}, "backbone_args.group",
     "nf \\(10\\) divisible by group \\(4\\)"),
    (lambda c: {**c, "kind": "original"}, "classifier", "not a field of a 'original' config"),
    (lambda c: {**c, "extra": 1}, "extra", "not a field of a 'pcsr' config"),
    (lambda c: {**c, "info": "trained"}, "info", "expected an object, got str"),
])
def test_malformed_configs_raise_checkpoint_error_naming_the_field(tiny_file, tmp_path, builds, mutate, field, message):
    m, config, state = tiny_file
    path = _write(tmp_path / "bad.safetensors", state, mutate(copy.deepcopy(config)))
    with pytest.raises(CheckpointError, match=message) as e:
        checkpoint.load(path)
    assert e.value.field == field and field in str(e.value)
    assert builds == []


def test_original_config_scale_must_have_a_tail(tmp_path):
    m = SRModel("carn", {"nf": 8, "group": 4, "scale": 4})
    config = checkpoint.model_config(m)
    path = _write(tmp_path / "o.safetensors", m.state_dict(), {**config, "backbone_args": {"nf": 8, "scale": 5}})
    with pytest.raises(CheckpointError, match="backbone_args.scale: the carn upsampling tail supports scales 2, 3, 4"):
        checkpoint.load(path)


def _raw_safetensors(path, header: bytes, data: bytes = b"", length: int | None = None):
    n = len(header) if length is None else length
    path.write_bytes(n.to_bytes(8, "little") + header + data)
    return path


def test_hostile_safetensors_headers(tmp_path):
    # A header length claiming far more than the file (2^62 bytes, or past the end).
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        checkpoint.load(_raw_safetensors(tmp_path / "a.safetensors", b"{}", length=2 ** 62))
    with pytest.raises(CheckpointError, match="header length 1,000 bytes; the file has 12 bytes"):
        checkpoint.read_header(_raw_safetensors(tmp_path / "b.safetensors", b"{}  ", length=1000))
    # A header length within a (sparse, 20 MiB) file but above the limit: never read.
    big = tmp_path / "c.safetensors"
    _raw_safetensors(big, b"{", length=17 * 2 ** 20)
    with open(big, "r+b") as f:
        f.truncate(20 * 2 ** 20)
    with pytest.raises(CheckpointError, match=r"header length 17,825,792 bytes; the file has 20,971,520 bytes, "
                                              r"the limit is 16,777,216"):
        checkpoint.load(big)
    meta = {"__metadata__": {"pcsr_config": "{}"}}

    def entry(**kw):
        e = {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]}
        e.update(kw)
        return json.dumps({**meta, "w": e}).encode()

    cases = [
        (entry(data_offsets=[0, 10 ** 12]), "needs 16 bytes, the header gives bytes 0..1,000,000,000,000 of 16"),
        (entry(shape=[10 ** 6, 10 ** 6]), "needs 4,000,000,000,000 bytes"),
        (entry(shape=[-1, 2]), "bad shape"),
        (entry(shape="big"), "bad shape"),
        (entry(data_offsets=[8, 4]), "the header gives bytes 8..4"),
        (entry(dtype="F8_E4M3"), "unsupported dtype 'F8_E4M3'"),
        (entry(dtype=None), "unsupported dtype None"),
        (json.dumps({**meta, "w": [1, 2]}).encode(), "expected dtype, shape and data_offsets"),
        (json.dumps({"__metadata__": {"pcsr_config": 5}}).encode(), "__metadata__ must map strings to strings"),
        (b"[1, 2]", "header is a list"),
        (b'{"a": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "safetensors header is nested too deeply"),
        (b"{\xff\xfe}", "not UTF-8"),
    ]
    for i, (header, message) in enumerate(cases):
        path = _raw_safetensors(tmp_path / f"h{i}.safetensors", header, bytes(16))
        with pytest.raises(CheckpointError, match=message):
            checkpoint.load(path)


# --- mutation: any change of any config field is loaded or refused with that field named ----------

_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.integers(-3, 70) | st.floats() | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8)
# Values close to valid ones, so that some mutations pass the schema and reach the shape check.
_NEAR = st.one_of(st.lists(st.integers(-1, 20), max_size=4), st.lists(st.lists(st.integers(1, 14), max_size=3),
                  max_size=4), st.sampled_from(["pcsr", "original", "fsrcnn", "carn", "srresnet", 1, 2, 4, 8, 12]))
_PATHS = [(), ("format",), ("version",), ("kind",), ("backbone",), ("backbone_args",), ("backbone_args", "d"),
          ("backbone_args", "s"), ("backbone_args", "m"), ("backbone_args", "scale"), ("upsamplers",),
          ("upsamplers", 0), ("upsamplers", 1), ("upsamplers", 0, 1), ("upsamplers", 1, 0), ("classifier",),
          ("classifier", 0), ("rgb_mean",), ("rgb_mean", 2), ("rgb_std",), ("rgb_std", 0), ("info",), ("extra",)]


def _render(path) -> str:
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else p)
    return out or "config"


def _related(field: str, mutated: str) -> bool:
    """Whether an error about ``field`` is about the mutated field: the field itself, a part
    of it or the whole it belongs to (any field of a replaced config); a new kind makes the
    other kind's fields foreign; a new backbone makes the old one's arguments foreign."""
    if mutated == "config" or field.startswith(mutated) or mutated.startswith(field):
        return True
    return (mutated == "kind" and field in ("upsamplers", "classifier")
            or mutated == "backbone" and field.startswith("backbone_args"))


_DELETE = object()


@settings(max_examples=250, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(path=st.sampled_from(_PATHS), value=st.one_of(_JSON, _NEAR) | st.just(_DELETE))
def test_mutated_config_is_loaded_or_refused_naming_the_field(tmp_path, path, value):
    m = _tiny(M=2)
    config = checkpoint.model_config(m)
    mutated = copy.deepcopy(config)
    if not path:
        mutated = None if value is _DELETE else value
    else:
        parent = mutated
        for p in path[:-1]:
            parent = parent[p]
        if value is _DELETE:
            if isinstance(parent, dict):
                parent.pop(path[-1], None)
            else:
                del parent[path[-1]]
        else:
            parent[path[-1]] = value
    file = _write(tmp_path / "mut.safetensors", m.state_dict(), mutated)
    try:
        loaded = checkpoint.load(file)
    except CheckpointError as e:
        assert e.field is not None and e.field in str(e), str(e)
        assert _related(e.field, _render(path)), f"mutated {_render(path)}, error names {e.field}: {e}"
        return
    # Accepted: then it is a model that the tensors really fit.
    for k, v in m.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k


# --- the authors' format, crafted here from a tiny model ------------------------------------------

_THEIR_PREFIX = {"backbone.": "encoder.", "upsamplers.0.": "heavy_sampler.imnet.",
                 "upsamplers.1.": "light_sampler.imnet.", "classifier.": "classifier.imnet."}


def _authors_file(m: PCSR) -> dict:
    """``m`` as the authors' code saves a pcsr-phase1 model (their branch order: light first)."""
    sd = {}
    for k, v in m.state_dict().items():
        old = next(p for p in _THEIR_PREFIX if k.startswith(p))
        sd[_THEIR_PREFIX[old] + k[len(old):]] = v.clone()
    last = 2 * len(m.config["classifier"])
    for s in ("weight", "bias"):
        sd[f"classifier.imnet.layers.{last}.{s}"] = sd[f"classifier.imnet.layers.{last}.{s}"].flip(0)

    def sampler(hidden):
        return {"name": "liif-sampler", "args": {"imnet_spec": {"name": "mlp", "args": {"hidden_list": hidden}}}}

    encoder = {"name": m.config["backbone"], "args": {**m.config["backbone_args"], "no_upsampling": True}}
    args = {"encoder_spec": encoder,
            "heavy_sampler_spec": sampler(m.config["upsamplers"][0]),
            "light_sampler_spec": sampler(m.config["upsamplers"][1]),
            "classifier_spec": sampler(m.config["classifier"])}
    return {"model": {"name": "pcsr-phase1", "args": args, "sd": sd}, "iter": 7}


def test_crafted_authors_file_loads_with_branches_swapped(tmp_path):
    m = _tiny(M=2)
    torch.save(_authors_file(m), tmp_path / "theirs.pth")
    got = checkpoint.load(tmp_path / "theirs.pth")
    for k, v in m.state_dict().items():
        assert torch.equal(got.state_dict()[k], v), k


HIDDEN = ("args", "heavy_sampler_spec", "args", "imnet_spec", "args", "hidden_list")


def _set(ck, path, value):
    d = ck["model"]
    for p in path[:-1]:
        d = d[p]
    if value is _DELETE:
        del d[path[-1]]
    else:
        d[path[-1]] = value


@pytest.mark.parametrize("path,value,field,message", [
    (("args", "encoder_spec"), _DELETE, "model.args.encoder_spec", "model.args has no entry 'encoder_spec'"),
    (("args", "encoder_spec", "name"), 5, "model.args.encoder_spec.name", "should be a str, got int"),
    (("args", "encoder_spec", "name"), "edsr", "model.args.encoder_spec.name", "unsupported backbone 'edsr'"),
    (("args", "encoder_spec", "args", "no_upsampling"), "yes", "model.args.encoder_spec.args.no_upsampling",
     "should be a bool"),
    (("args", "encoder_spec", "args", "d"), 10 ** 9, "backbone_args.d", r"\(model.args.encoder_spec.args.d\).*1..1024"),
    (("args", "encoder_spec", "args", "d"), 9, "backbone_args", "backbone.head_conv.0.weight has shape"),
    (HIDDEN, "58", "model.args.heavy_sampler_spec.args.imnet_spec.args.hidden_list", "should be a list or tuple"),
    (HIDDEN, [30000] * 4, "upsamplers[0][0]",
     r"\(model.args.heavy_sampler_spec.args.imnet_spec.args.hidden_list\[0\]\).*got 30000"),
    (HIDDEN[:3], None, "model.args.heavy_sampler_spec.args", "should be a dict, got NoneType"),
    (("args",), [], "model.args", "should be a dict, got list"),
    (("name",), None, "model.name", "should be a str, got NoneType"),
    (("sd",), [1, 2], "model.sd", "should be a dict, got list"),
    (("sd", "encoder.head_conv.0.bias"), 3, "model.sd['encoder.head_conv.0.bias']",
     "should be a dense tensor, got int"),
    (("sd", "classifier.imnet.layers.2.weight"), _DELETE, "classifier", r"missing \['classifier.layers.2.weight'\]"),
    (("sd", "decoder.w"), torch.zeros(2), "model.sd['decoder.w']", "unexpected key 'decoder.w'"),
])
def test_malformed_authors_files_name_the_entry(tmp_path, builds, path, value, field, message):
    ck = _authors_file(_tiny(M=2))
    _set(ck, path, value)
    torch.save(ck, tmp_path / "bad.pth")
    with pytest.raises(CheckpointError, match=message) as e:
        checkpoint.load(tmp_path / "bad.pth")
    assert e.value.field == field
    assert builds in ([], ["meta"])


def test_malformed_authors_original_files(tmp_path):
    m = SRModel("fsrcnn", {"d": 8, "s": 4, "m": 1, "scale": 4})
    sd = {k[len("net."):]: v for k, v in m.state_dict().items()}
    cases = [({"upscale": 4, "d": 8, "s": 4, "m": 1, "no_upsampling": True}, "model.args.no_upsampling",
              "without its upsampling tail"),
             ({"upscale": 4, "d": 8, "s": 4, "m": 1, "colour": 1}, "backbone_args.colour", r"\(model.args.colour\)"),
             ({"upscale": 12, "d": 8, "s": 4, "m": 1}, "backbone_args.upscale", "supports scales 2, 3, 4"),
             ({"upscale": 4, "d": 9, "s": 4, "m": 1}, "backbone_args", "net.head_conv.0.weight has shape"),
             ({"upscale": 4, "d": 8, "s": 4, "m": 2}, "backbone_args", r"missing \['net.body_conv.2.bias'")]
    for args, field, message in cases:
        torch.save({"model": {"name": "fsrcnn", "args": args, "sd": sd}}, tmp_path / "o.pth")
        with pytest.raises(CheckpointError, match=message) as e:
            checkpoint.load(tmp_path / "o.pth")
        assert e.value.field == field
    good = {"upscale": 4, "d": 8, "s": 4, "m": 1}
    torch.save({"model": {"name": "fsrcnn", "args": good, "sd": sd}}, tmp_path / "o.pth")
    got = checkpoint.load(tmp_path / "o.pth")
    assert all(torch.equal(v, m.state_dict()[k]) for k, v in got.state_dict().items())
