"""The Slicer extension's packaging files, checked without Slicer.

A packaged extension holds only the files its CMake lists name, so every module script and every
resource must be listed (the stand-in `Testing/cmake/SlicerConfig.cmake` records what CMake passes to
Slicer's macros); the `.s4ext` must agree with the CMake metadata; the panel's `.ui` must hold every
widget the module code uses, with the class the code expects, and only real Slicer/CTK custom widgets.
"""
import re
import shutil
import struct
import subprocess
import xml.etree.ElementTree as ET
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
MODULE_DIR = ROOT / "MedSAMLite"
STAND_IN_DIR = MODULE_DIR / "Testing" / "cmake"
UI_FILE = MODULE_DIR / "Resources" / "UI" / "MedSAMLite.ui"
ICON_FILE = MODULE_DIR / "Resources" / "Icons" / "MedSAMLite.png"

requires_cmake = pytest.mark.skipif(shutil.which("cmake") is None, reason="cmake is not installed: CMake files not checked")

METADATA = ("HOMEPAGE", "CATEGORY", "CONTRIBUTORS", "DESCRIPTION", "ICONURL", "SCREENSHOTURLS", "DEPENDS")

# Widgets the module code uses (self.ui.<name>) and the class it relies on.
UI_WIDGETS = {
    "volumeSelector": "qMRMLNodeComboBox",
    "roiSelector": "qMRMLNodeComboBox",
    "segmentationSelector": "qMRMLNodeComboBox",
    "segmentSelector": "qMRMLSegmentSelectorWidget",
    "backendComboBox": "QComboBox",
    "presetComboBox": "QComboBox",
    "segmentButton": "QPushButton",
    "undoButton": "QPushButton",
    "statusLabel": "QLabel",
    "modeComboBox": "QComboBox",
    "emptySlicesSpinBox": "QSpinBox",
    "zoomCheckBox": "QCheckBox",
    "progressBar": "QProgressBar",
    "placeRoiButton": "QPushButton",
    "roiOnSliceButton": "QPushButton",
    "downloadButton": "QPushButton",
    "importCheckpointButton": "QPushButton",
    "showCacheButton": "QPushButton",
    "clearCacheButton": "QPushButton",
    "showEngineLogButton": "QPushButton",
    "dependencyLabel": "QLabel",
    "installDependenciesButton": "QPushButton",
    "correctButton": "QPushButton",
    "notHereButton": "QPushButton",
    "keySlicesList": "QListWidget",
    "showKeySliceButton": "QPushButton",
    "removeKeySliceButton": "QPushButton",
}
# Custom widget classes that exist in Slicer/CTK; their headers are named after the class.
SLICER_CUSTOM_WIDGETS = {
    "ctkCollapsibleButton", "ctkCollapsibleGroupBox", "ctkSliderWidget", "ctkRangeWidget", "ctkCheckBox",
    "ctkComboBox", "ctkPathLineEdit", "ctkDoubleSpinBox", "ctkMenuButton",
    "qMRMLWidget", "qMRMLNodeComboBox", "qMRMLSegmentSelectorWidget", "qMRMLSegmentsTableView",
    "qMRMLSliderWidget", "qMRMLSpinBox", "qMRMLCheckableNodeComboBox", "qMRMLSubjectHierarchyTreeView",
    "qMRMLSubjectHierarchyComboBox", "qMRMLSegmentationShow3DButton",
}
QT_WIDGETS = {
    "QWidget", "QFrame", "QGroupBox", "QLabel", "QComboBox", "QPushButton", "QToolButton", "QCheckBox",
    "QRadioButton", "QSpinBox", "QDoubleSpinBox", "QLineEdit", "QTextEdit", "QPlainTextEdit", "QProgressBar",
    "QSlider", "QTabWidget", "QStackedWidget", "QScrollArea",
    "QListWidget",
}


# -- helpers ---------------------------------------------------------------------------------------
def disk_scripts():
    """Every Python file Slicer must ship: the module's own and those of its core package."""
    files = set(MODULE_DIR.glob("*.py")) | set((MODULE_DIR / "MedSAMLiteLib").rglob("*.py"))
    files |= set((MODULE_DIR / "SegmentEditorMedSAMLiteLib").rglob("*.py"))  # the Segment Editor effect
    return {p.relative_to(ROOT).as_posix() for p in files if "__pycache__" not in p.parts}


def disk_resources():
    files = (MODULE_DIR / "Resources").rglob("*")
    return {p.relative_to(ROOT).as_posix() for p in files if p.is_file() and "__pycache__" not in p.parts}


def cmake_metadata():
    """EXTENSION_* values as written in the top-level CMakeLists.txt."""
    text = (ROOT / "CMakeLists.txt").read_text()
    return dict(re.findall(r'^\s*set\(EXTENSION_(\w+)\s+"([^"]*)"\)', text, re.MULTILINE))


def s4ext():
    """keyword -> value of MedSAMLite.s4ext (first token is the keyword, the rest is the value)."""
    values = {}
    for line in (ROOT / "MedSAMLite.s4ext").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.strip().partition(" ")
            assert key not in values, f"MedSAMLite.s4ext: keyword '{key}' given twice"
            values[key] = value.strip()
    return values


def configure(source_dir, build_dir):
    """Run a CMake configure with the stand-in Slicer; returns the completed process."""
    return subprocess.run(
        ["cmake", "-S", str(source_dir), "-B", str(build_dir), f"-DSlicer_DIR={STAND_IN_DIR}"],
        capture_output=True, text=True, timeout=300,
    )


@pytest.fixture(scope="module")
def record(tmp_path_factory):
    """KIND -> list of values that the extension's CMake files passed to the stand-in Slicer."""
    build = tmp_path_factory.mktemp("cmake-build")
    result = configure(ROOT, build)
    assert result.returncode == 0, f"cmake configure failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    recorded = defaultdict(list)
    for line in (build / "slicer-stand-in-record.txt").read_text().splitlines():
        kind, _, value = line.partition("\t")
        recorded[kind].append(value)
    return recorded


@pytest.fixture(scope="module")
def ui():
    return ET.parse(UI_FILE).getroot()


def widget_classes(root):
    return {w.get("name"): w.get("class") for w in root.iter("widget")}


# -- (a) CMake lists = files on disk -----------------------------------------------------------------
@requires_cmake
def test_cmake_lists_every_script(record):
    listed = record["SCRIPTS"]
    assert len(listed) == len(set(listed)), "a script is listed twice"
    on_disk = disk_scripts()
    assert not on_disk - set(listed), f"Python files missing from MedSAMLite/CMakeLists.txt: {sorted(on_disk - set(listed))}"
    assert set(listed) == on_disk


@requires_cmake
def test_cmake_lists_every_resource(record):
    listed = record["RESOURCES"]
    assert len(listed) == len(set(listed)), "a resource is listed twice"
    on_disk = disk_resources()
    assert not on_disk - set(listed), f"resources missing from MedSAMLite/CMakeLists.txt: {sorted(on_disk - set(listed))}"
    assert set(listed) == on_disk


@requires_cmake
def test_cmake_module_tests_and_metadata(record):
    assert record["MODULE"] == ["MedSAMLite"]
    assert "WITH_GENERIC_TESTS" in record["OPTION"]
    assert record["UNITTEST"] == ["MedSAMLite/Testing/Python/MedSAMLiteSelfTest.py"]
    assert {k[len("EXTENSION_"):]: v[0] for k, v in record.items() if k.startswith("EXTENSION_")} == cmake_metadata()


@requires_cmake
@pytest.mark.parametrize("call, message", [
    ("NAME M SCRIPTS missing.py", "nonexistent file 'missing.py'"),
    ("NAME M SCRIPTS CMakeLists.txt RESOURCES Resources/none.png", "nonexistent file 'Resources/none.png'"),
    ("TARGET_LIBRARIES x NAME M SCRIPTS CMakeLists.txt", "Unknown keywords"),  # Slicer's scripted macro has none
    ("NAME M SCRIPTS CMakeLists.txt TARGET_LIBRARIES x", "nonexistent file 'TARGET_LIBRARIES'"),
    ("SCRIPTS CMakeLists.txt", "NAME is mandatory"),
])
def test_stand_in_rejects_bad_calls(tmp_path, call, message):
    """The stand-in fails as Slicer's macro does, so a passing configure means something."""
    (tmp_path / "CMakeLists.txt").write_text(
        "cmake_minimum_required(VERSION 3.16)\nproject(T NONE)\nfind_package(Slicer REQUIRED)\n"
        f"include(${{Slicer_USE_FILE}})\nslicerMacroBuildScriptedModule({call})\n"
    )
    result = configure(tmp_path, tmp_path / "build")
    assert result.returncode != 0
    assert message in " ".join(result.stderr.split())


# -- (b) .s4ext = CMake metadata -----------------------------------------------------------------------
def test_cmake_metadata_complete():
    metadata = cmake_metadata()
    assert set(metadata) == set(METADATA)
    assert all(metadata.values()), "an EXTENSION_* value is empty"
    assert metadata["DEPENDS"] == "NA"
    assert len(re.findall(r"[.!?](\s|$)", metadata["DESCRIPTION"])) in (1, 2), "description: 1-2 sentences"


def test_s4ext_matches_cmake():
    description, metadata = s4ext(), cmake_metadata()
    for name in METADATA:
        assert description[name.lower()] == metadata[name], f".s4ext '{name.lower()}' differs from EXTENSION_{name}"
    assert description["scm"] == "git"
    assert description["scmurl"] == metadata["HOMEPAGE"] + ".git"
    assert description["scmrevision"] == "main"
    assert description["build_subdirectory"] == "."
    assert description["enabled"] == "1"
    assert description["status"]


def test_icon_url_names_the_shipped_icon():
    url = cmake_metadata()["ICONURL"]
    repo_path = "/".join(cmake_metadata()["HOMEPAGE"].split("/")[-2:])
    prefix = f"https://raw.githubusercontent.com/{repo_path}/main/"
    assert url.startswith(prefix)
    assert (ROOT / url[len(prefix):]) == ICON_FILE
    data = ICON_FILE.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert struct.unpack(">II", data[16:24]) == (128, 128)
    assert len(data) < 8192


def test_screenshot_url_names_the_committed_screenshot():
    url = cmake_metadata()["SCREENSHOTURLS"]
    repo_path = "/".join(cmake_metadata()["HOMEPAGE"].split("/")[-2:])
    prefix = f"https://raw.githubusercontent.com/{repo_path}/main/"
    assert url.startswith(prefix)
    shot = ROOT / url[len(prefix):]
    assert shot.parent.name == "Screenshots" and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert shot.stat().st_size < 300_000


def test_licence_and_contributors_as_the_index_asks():
    licence = (ROOT / "LICENSE").read_text()
    assert "Apache License" in licence and "Version 2.0, January 2004" in licence and "END OF TERMS AND CONDITIONS" in licence
    contributors = cmake_metadata()["CONTRIBUTORS"]
    assert re.fullmatch(r"[^(),]+ \([^()]+\)(, [^(),]+ \([^()]+\))*", contributors), "contributors: 'Name (Organisation)'"
    module = (MODULE_DIR / "MedSAMLite.py").read_text()
    assert f"self.parent.contributors = [{contributors!r}]".replace("'", '"') in module


# -- (c) the panel's .ui ---------------------------------------------------------------------------------
def test_ui_has_every_widget_the_code_uses(ui):
    used = set(re.findall(r"self\.ui\.(\w+)", (MODULE_DIR / "MedSAMLite.py").read_text()))
    assert used, "MedSAMLite.py uses no self.ui widgets: has the widget moved?"
    assert not used - set(UI_WIDGETS), f"widgets used by MedSAMLite.py but not expected here: {sorted(used - set(UI_WIDGETS))}"
    classes = widget_classes(ui)
    for name in used:
        assert classes.get(name) == UI_WIDGETS[name], f"{name}: {classes.get(name)} in the .ui, code expects {UI_WIDGETS[name]}"


def test_ui_root_and_sections(ui):
    root = ui.find("widget")
    assert root.get("class") == "qMRMLWidget", "the widget calls setMRMLScene on the .ui root"
    sections = {}
    for button in ui.iter("widget"):
        if button.get("class") == "ctkCollapsibleButton":
            sections[button.findtext("property[@name='text']/string")] = set(widget_classes(button))
    assert {"volumeSelector", "roiSelector", "segmentationSelector", "segmentSelector"} <= sections["Inputs"]
    assert {"backendComboBox", "presetComboBox", "segmentButton", "statusLabel"} <= sections["Segment"]


def test_ui_custom_widgets_are_real(ui):
    declared = {c.findtext("class"): c for c in ui.iter("customwidget")}
    for cls, entry in declared.items():
        assert cls in SLICER_CUSTOM_WIDGETS, f"custom widget {cls} is not a known Slicer/CTK class"
        assert entry.findtext("header") == f"{cls}.h"
    used = set(widget_classes(ui).values())
    assert not used - QT_WIDGETS - set(declared), f"classes neither Qt nor declared: {sorted(used - QT_WIDGETS - set(declared))}"
    assert not set(declared) - used, f"custom widgets declared but unused: {sorted(set(declared) - used)}"


def node_types(ui, name):
    widget = next(w for w in ui.iter("widget") if w.get("name") == name)
    return [s.text for s in widget.findall("property[@name='nodeTypes']/stringlist/string")]


def bool_property(ui, name, prop):
    widget = next(w for w in ui.iter("widget") if w.get("name") == name)
    return widget.findtext(f"property[@name='{prop}']/bool") == "true"


def test_ui_selector_settings(ui):
    assert node_types(ui, "volumeSelector") == ["vtkMRMLScalarVolumeNode", "vtkMRMLVectorVolumeNode"]
    assert node_types(ui, "roiSelector") == ["vtkMRMLMarkupsROINode"]
    assert node_types(ui, "segmentationSelector") == ["vtkMRMLSegmentationNode"]
    assert bool_property(ui, "volumeSelector", "noneEnabled")
    assert bool_property(ui, "roiSelector", "addEnabled")
    assert bool_property(ui, "segmentationSelector", "addEnabled")
    assert bool_property(ui, "segmentSelector", "noneEnabled"), "'None' segment = write into a new segment"


def test_ui_mrml_widgets_get_the_scene(ui):
    root_name = ui.find("widget").get("name")
    classes = widget_classes(ui)
    connections = [
        (c.findtext("sender"), c.findtext("signal"), c.findtext("receiver"), c.findtext("slot"))
        for c in ui.iter("connection")
    ]
    for sender, _, receiver, _ in connections:
        assert sender in classes and receiver in classes, f"connection {sender} -> {receiver}: unknown widget"
    scene_receivers = [
        r for s, sig, r, slot in connections
        if s == root_name and sig == "mrmlSceneChanged(vtkMRMLScene*)" and slot == "setMRMLScene(vtkMRMLScene*)"
    ]
    mrml_widgets = {n for n, c in classes.items() if c.startswith("qMRML") and n != root_name}
    assert mrml_widgets <= set(scene_receivers), f"without the scene: {sorted(mrml_widgets - set(scene_receivers))}"
    # the segment list follows the segmentation selector; it needs the scene before that selector picks a node
    assert ("segmentationSelector", "currentNodeChanged(vtkMRMLNode*)", "segmentSelector",
            "setCurrentNode(vtkMRMLNode*)") in connections
    assert scene_receivers.index("segmentSelector") < scene_receivers.index("segmentationSelector")
