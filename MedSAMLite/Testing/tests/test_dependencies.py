"""The panel's install arguments: the requirements plus every installed distribution pinned (stdlib only)."""
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from MedSAMLiteLib import dependencies

MODULE_DIR = Path(__file__).resolve().parents[2]


def _constraints(args: list[str]) -> dict[str, str]:
    assert args[0] == "-r" and args[2] == "-c" and len(args) == 4, args
    lines = Path(args[3]).read_text().splitlines()
    return dict(line.split("==", 1) for line in lines)


def test_arguments_name_the_requirements_and_pin_what_is_installed():
    with dependencies.pip_install_arguments() as args:
        assert Path(args[1]) == MODULE_DIR / "Resources" / "requirements.txt" and Path(args[1]).is_file()
        pins = _constraints(args)
    assert pins["numpy"] == np.__version__  # what Slicer ships stays as it is
    assert pins == dependencies.installed_versions()
    assert not Path(args[3]).exists(), "the constraints file outlived the install"


def test_the_constraints_file_goes_away_after_a_failed_install_too():
    with pytest.raises(RuntimeError), dependencies.constraints_file() as constraints:
        assert constraints.read_text() == dependencies.constraints_text()
        raise RuntimeError("pip failed")
    assert not constraints.exists()


def test_requirements_are_what_the_panel_checks_for():
    names = [line.split(">=")[0] for line in dependencies.REQUIREMENTS.read_text().splitlines() if line and line[0] != "#"]
    assert names == ["openvino", "opencv-python-headless"]


def test_odd_versions_pin_as_strings():
    text = dependencies.constraints_text({"numpy": "1.26.4", "torch": "2.5.1+cpu", "odd": "2013b"})
    assert text.splitlines() == ["numpy==1.26.4", "odd===2013b", "torch==2.5.1+cpu"]


def test_changed_versions():
    before = {"numpy": "1.26.4", "scipy": "1.13.1", "simpleitk": "2.3.1"}
    after = {"numpy": "2.0.2", "scipy": "1.13.1", "openvino": "2025.3.0"}
    assert dependencies.changed_versions(before, after) == {"numpy": ("1.26.4", "2.0.2"), "simpleitk": ("2.3.1", None)}


def test_runs_on_the_standard_library_alone_and_pip_reads_the_constraints(tmp_path):
    """No site-packages (as before openvino/opencv exist); then pip parses the file without an index."""
    code = (f"import sys; sys.path.insert(0, {str(MODULE_DIR)!r}); from MedSAMLiteLib import dependencies\n"
            "with dependencies.pip_install_arguments() as args: print(open(args[3]).read() + '-- ' + args[3])")
    child = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True, timeout=60)
    assert child.returncode == 0, child.stderr
    text, path = child.stdout.rsplit("-- ", 1)
    assert "numpy" not in text and not Path(path.strip()).exists()  # -S: no site-packages, nothing to pin
    with dependencies.constraints_file() as constraints:
        pip = subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--no-index", "-c", str(constraints), "numpy"],
                             capture_output=True, text=True, timeout=120)
    assert pip.returncode == 0, pip.stdout + pip.stderr
    assert "already satisfied" in pip.stdout


# -- the panel's Install button (MedSAMLiteWidget.onInstallDependencies) on slicer-core ----------------

sys.path.insert(0, str(MODULE_DIR / "Testing"))
import harness  # noqa: E402

MODULE = harness.load_module()
import slicer  # noqa: E402


@pytest.fixture
def panel(monkeypatch):
    """A stand-in widget (the method only uses its Logic and two refreshes) and what it called."""
    calls = {}
    monkeypatch.setattr(slicer.util, "confirmOkCancelDisplay", lambda text, *a, **k: calls.setdefault("confirm", text) != "")
    import qt  # the harness's inert stand-in

    monkeypatch.setattr(qt, "Qt", types.SimpleNamespace(WaitCursor=3), raising=False)
    monkeypatch.setattr(slicer.app, "setOverrideCursor", lambda *a: None, raising=False)
    monkeypatch.setattr(slicer.app, "restoreOverrideCursor", lambda *a: None, raising=False)
    monkeypatch.delattr(slicer, "packaging", raising=False)
    logic = types.SimpleNamespace(missingDependencies=lambda: ["openvino", "opencv-python-headless"])
    widget = types.SimpleNamespace(logic=logic, updateDependencies=lambda: calls.setdefault("updated", True),
                                   refreshBackends=lambda: None)
    return widget, calls


def _pinned(constraints) -> dict[str, str]:
    """The pins pip reads while it runs (the file must exist then)."""
    return dict(line.split("==", 1) for line in Path(constraints).read_text().splitlines())


def test_install_before_slicer_5_12_pins_every_installed_package(panel, monkeypatch):
    widget, calls = panel
    monkeypatch.setattr(slicer.util, "pip_install", lambda args: calls.setdefault("pip", (list(args), _pinned(args[3]))))
    MODULE.MedSAMLiteWidget.onInstallDependencies(widget)
    args, pins = calls["pip"]
    assert args[:2] == ["-r", str(dependencies.REQUIREMENTS)] and args[2] == "-c"
    assert pins["numpy"] == np.__version__
    assert not Path(args[3]).exists(), "each Install click would leave a constraints file behind"
    assert "keep their versions" in calls["confirm"] and calls["updated"]


def test_install_on_slicer_5_12_gives_pip_ensure_requirements_and_constraints(panel, monkeypatch):
    widget, calls = panel

    def pip_ensure(requirements, constraints=None, prompt_install=True, requester=None):
        calls["ensure"] = (requirements, constraints, _pinned(constraints), prompt_install, requester)

    packaging = types.SimpleNamespace(load_requirements=lambda path: ("parsed", Path(path)), pip_ensure=pip_ensure)
    monkeypatch.setattr(slicer, "packaging", packaging, raising=False)
    monkeypatch.setattr(slicer.util, "pip_install", lambda args: pytest.fail("pip_install on Slicer 5.12"))
    MODULE.MedSAMLiteWidget.onInstallDependencies(widget)
    requirements, constraints, pins, prompt_install, requester = calls["ensure"]
    assert requirements == ("parsed", dependencies.REQUIREMENTS)  # parsed, not a path
    assert pins["numpy"] == np.__version__ and not Path(constraints).exists()
    assert prompt_install is False and requester == "MedSAMLite"  # the panel asked already


def test_failed_install_is_shown(panel, monkeypatch):
    widget, calls = panel

    def pip_install(args):
        calls["constraints"] = args[3]
        raise subprocess.CalledProcessError(1, ["pip", "install", *args])

    monkeypatch.setattr(slicer.util, "pip_install", pip_install)
    monkeypatch.setattr(slicer.app, "testingEnabled", lambda: False, raising=False)
    monkeypatch.setattr(slicer.util, "errorDisplay", lambda text, **k: calls.setdefault("error", text))
    with pytest.raises(subprocess.CalledProcessError):  # tryWithErrorDisplay shows it, then re-raises
        MODULE.MedSAMLiteWidget.onInstallDependencies(widget)
    assert calls["error"].startswith("MedSAMLite: installing the dependencies failed.") and "updated" not in calls
    assert not Path(calls["constraints"]).exists()


def test_nothing_happens_when_declined(panel, monkeypatch):
    widget, calls = panel
    monkeypatch.setattr(slicer.util, "confirmOkCancelDisplay", lambda text, *a, **k: False)
    monkeypatch.setattr(slicer.util, "pip_install", lambda args: pytest.fail("installed after Cancel"))
    MODULE.MedSAMLiteWidget.onInstallDependencies(widget)
    assert "updated" not in calls
