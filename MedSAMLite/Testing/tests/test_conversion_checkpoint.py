"""Torch-free checkpoint reader: real and synthetic torch.save files (torch only writes them and serves as oracle)."""
from __future__ import annotations

import argparse
import os
import subprocess
import zipfile
from pathlib import Path

import numpy as np
import pytest
from MedSAMLiteLib.models.conversion.checkpoint import CheckpointError, load_weights, read_checkpoint
from reference import genuine_lite_medsam, read_keys, rule_weights

torch = pytest.importorskip("torch")

ENCODER = "image_encoder."


@pytest.fixture(scope="module")
def rule_numpy() -> dict[str, np.ndarray]:
    return rule_weights("lite_medsam")


@pytest.fixture(scope="module")
def rule_torch(rule_numpy) -> dict[str, "torch.Tensor"]:
    return {k: torch.from_numpy(v) for k, v in rule_numpy.items()}


def _save(obj, path: Path, **kwargs) -> Path:
    torch.save(obj, path, **kwargs)
    return path


def _assert_same(actual: dict[str, np.ndarray], expected: dict[str, np.ndarray]) -> None:
    assert list(actual) == list(expected)
    for key, value in expected.items():
        assert actual[key].dtype == value.dtype and actual[key].shape == value.shape, key
        assert np.array_equal(actual[key], value), key


def test_real_lite_medsam_matches_torch_load():
    path = genuine_lite_medsam()
    weights = load_weights(path)
    assert [(k, v.shape, str(v.dtype)) for k, v in weights.items()] == read_keys("lite_medsam")
    oracle = torch.load(path, map_location="cpu", weights_only=True)
    _assert_same(weights, {k: v.numpy() for k, v in oracle.items()})


@pytest.mark.parametrize("layout", ["plain", "nested_model", "lightning", "compiled_ddp"])
def test_wrapped_state_dicts(tmp_path, rule_numpy, rule_torch, layout):
    wrapped = {
        "plain": lambda sd: sd,
        "nested_model": lambda sd: {"model": sd, "optimizer": {"lr": 0.1}},
        "lightning": lambda sd: {
            "state_dict": {"model." + k: v for k, v in sd.items()},
            "hyper_parameters": argparse.Namespace(lr=1),
            "epoch": 3,
        },
        "compiled_ddp": lambda sd: {"model": {"state_dict": {"module._orig_mod." + k: v for k, v in sd.items()}}},
    }[layout](rule_torch)
    _assert_same(load_weights(_save(wrapped, tmp_path / "w.ckpt")), rule_numpy)


def test_distillation_keeps_student_encoder(tmp_path, rule_numpy, rule_torch):
    encoder = {k[len(ENCODER) :]: v for k, v in rule_torch.items() if k.startswith(ENCODER)}
    state = {"student_encoder." + k: v for k, v in encoder.items()}
    state.update({"teacher_encoder." + k: torch.zeros_like(v) for k, v in encoder.items()})
    weights = load_weights(_save({"state_dict": state, "epoch": 1}, tmp_path / "distill.ckpt"))
    _assert_same(weights, {k: v for k, v in rule_numpy.items() if k.startswith(ENCODER)})


def test_bare_encoder_keys_get_group(tmp_path, rule_numpy, rule_torch):
    encoder = {k[len(ENCODER) :]: v for k, v in rule_torch.items() if k.startswith(ENCODER)}
    weights = load_weights(_save(encoder, tmp_path / "encoder.pth"))
    _assert_same(weights, {k: v for k, v in rule_numpy.items() if k.startswith(ENCODER)})


def test_views_shared_storage_and_dtypes(tmp_path):
    base = torch.arange(60, dtype=torch.float32).reshape(6, 10)
    tensors = {
        "base": base,
        "transposed": base.t(),
        "strided_offset": base[1:, 2::3],
        "row": base[4],
        "scalar": torch.tensor(7, dtype=torch.int64),
        "empty": torch.zeros(0, 3),
        "half": torch.linspace(-2, 2, 9, dtype=torch.float16),
        "bfloat16": torch.linspace(-3, 3, 7, dtype=torch.bfloat16)[::2],
        "double": torch.tensor([1e-300, 2.5], dtype=torch.float64),
        "int8": torch.tensor([-3, 4], dtype=torch.int8),
        "bool": torch.tensor([True, False]),
        "parameter": torch.nn.Parameter(torch.ones(2, 2)),
    }
    loaded = read_checkpoint(_save(tensors, tmp_path / "views.pt"))
    for key, tensor in tensors.items():
        expected = tensor.detach().float().numpy() if tensor.dtype == torch.bfloat16 else tensor.detach().numpy()
        assert loaded[key].dtype == expected.dtype and np.array_equal(loaded[key], expected), key
    assert loaded["bfloat16"].dtype == np.float32 and loaded["half"].dtype == np.float16
    loaded["row"][0] = -1  # arrays own their memory even when torch tensors shared one storage
    assert loaded["base"][4, 0] == 40


def _rewrite_archive(source: Path, target: Path, edit) -> Path:
    """Copy a zip archive; EDIT(name, data) returns the new (name, data) of a record, or None to drop it."""
    with zipfile.ZipFile(source) as zin, zipfile.ZipFile(target, "w") as zout:
        for name in zin.namelist():
            record = edit(name, zin.read(name))
            if record is not None:
                zout.writestr(*record)
    return target


def test_big_endian_byteorder_and_arbitrary_folder(tmp_path):
    values = np.array([[1.5, -2.25], [3.0, 1e-7]], dtype=np.float32)
    source = _save({"w": torch.from_numpy(values)}, tmp_path / "little.pt")

    def to_big_endian(name, data):
        name = "renamed_folder/" + name.split("/", 1)[1]
        if name.endswith("/byteorder"):
            data = b"big"
        elif "/data/" in name:
            data = np.frombuffer(data, "<f4").astype(">f4").tobytes()
        return name, data

    with zipfile.ZipFile(source) as archive:
        assert any(n.endswith("/byteorder") for n in archive.namelist())
    loaded = read_checkpoint(_rewrite_archive(source, tmp_path / "big.pt", to_big_endian))
    assert loaded["w"].dtype == np.float32 and np.array_equal(loaded["w"], values)


def _marker_payload(marker: Path):
    """Objects whose unpickling would create MARKER through os.system, builtins.exec or subprocess."""

    class System:
        def __reduce__(self):
            return os.system, (f"touch {marker}",)

    class Exec:
        def __reduce__(self):
            return exec, (f"open({str(marker)!r}, 'w').close()",)

    class Subprocess:
        def __reduce__(self):
            return subprocess.call, (["touch", str(marker)],)

    return {"system": System(), "exec": Exec(), "subprocess": Subprocess()}


@pytest.mark.parametrize("kind", ["system", "exec", "subprocess"])
def test_malicious_pickle_refused_before_running(tmp_path, kind):
    marker = tmp_path / "pwned"
    path = _save({"weight": torch.ones(2), "payload": _marker_payload(marker)[kind]}, tmp_path / "evil.pth")
    with pytest.raises(CheckpointError, match="refused") as error:
        load_weights(path)
    assert str(path) in str(error.value) and "\n" not in str(error.value)
    assert not marker.exists()


class _AttributeDict(dict):
    """Like Lightning's AttributeDict: a dict subclass the reader must not import."""


def test_lightning_hyper_parameters_are_inert(tmp_path):
    extras = {"blob": b"\x00\xff", "tags": {"a"}, "attrs": _AttributeDict(depth=2), "list": [1, (2, 3.5)]}
    obj = {"state_dict": {"model.neck.0.weight": torch.ones(1)}, "hyper_parameters": argparse.Namespace(lr=2), **extras}
    loaded = read_checkpoint(_save(obj, tmp_path / "hp.ckpt"))
    hyper = loaded["hyper_parameters"]
    assert not isinstance(hyper, argparse.Namespace) and hyper.state == {"lr": 2} and hyper.args == ()
    assert type(loaded["attrs"]).__name__ == "_AttributeDict" and dict(loaded["attrs"]) == {"depth": 2}
    assert all(loaded[k] == v for k, v in extras.items() if k != "attrs")
    assert list(load_weights(tmp_path / "hp.ckpt")) == ["neck.0.weight"]  # too little to call it an encoder


def _broken_files(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    good = _save({"w": torch.ones(3, 4), "b": torch.zeros(4)}, tmp_path / "good.pt")
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    noise = tmp_path / "noise.pt"
    noise.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    drop_first_storage = lambda name, data: None if name.endswith("/data/0") else (name, data)  # noqa: E731
    no_record = _rewrite_archive(good, tmp_path / "no_record.pt", drop_first_storage)
    return {
        "missing": (tmp_path / "absent.pth", "no such"),
        "truncated": (truncated, "corrupt"),
        "noise": (noise, "not a PyTorch checkpoint"),
        "legacy": (_save({"w": torch.ones(2)}, tmp_path / "legacy.pt", _use_new_zipfile_serialization=False), "legacy"),
        "empty": (_save({}, tmp_path / "empty.pt"), "no tensors"),
        "no_tensors": (_save({"epoch": 3, "note": "x"}, tmp_path / "notes.pt"), "no tensors"),
        "no_record": (no_record, "missing storage record"),
        "float8": (_save({"w": torch.zeros(2, dtype=torch.float8_e4m3fn)}, tmp_path / "f8.pt"), "unsupported dtype"),
    }


def test_broken_files_raise_one_line_error_naming_file(tmp_path):
    for what, (path, expected) in _broken_files(tmp_path).items():
        with pytest.raises(CheckpointError) as error:
            load_weights(path)
        message = str(error.value)
        assert str(path) in message and expected in message and "\n" not in message, (what, message)
