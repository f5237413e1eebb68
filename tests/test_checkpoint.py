"""Checkpoints: the authors' files, the project's safetensors format, and bad files."""
import pickle
import zipfile

import pytest
import torch

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
