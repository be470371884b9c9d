"""Run MedSAMLite.py, unchanged, on PyPI slicer-core: real MRML, no Slicer application, no Qt.

slicer-core has Slicer's MRML, module logics and `slicer.util`, but no `slicer.app`, no
`slicer.mrmlScene`, no `slicer.modules` and no `slicer.ScriptedLoadableModule`. This harness adds
just enough of them for the Logic and the self-test: inert `qt`/`ctk` modules (the widget is built
and driven by the panel tests instead, on `pythonqt.py` and `slicer_app.py`, in a process of their own),
the four ScriptedLoadableModule base classes (the test base is a unittest.TestCase whose
`delayDisplay` only logs), and a scene with the Colors, Volumes, Segmentations, Markups and
SubjectHierarchy logics registered as in Slicer.

    from harness import load_module, new_scene
    MedSAMLite = load_module()      # the module, imported from MedSAMLite/MedSAMLite.py
    scene = new_scene()             # a fresh slicer.mrmlScene with the module logics
"""
from __future__ import annotations

import importlib
import logging
import os
import sys
import types
import unittest
from pathlib import Path

MODULE_DIR = Path(__file__).resolve().parents[1]


class _Inert:
    """Stands for any qt/ctk name: calling it or reading an attribute gives another inert object."""

    def __init__(self, *args, **kwargs):
        pass

    def __call__(self, *args, **kwargs):
        return _Inert()

    def __getattr__(self, name):
        return _Inert()


def _inert_module(name: str) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__getattr__ = lambda attr: _Inert  # type: ignore[attr-defined]
    return module


def _scripted_loadable_module() -> types.ModuleType:
    """The four base classes of slicer.ScriptedLoadableModule, written from what Slicer's own do: module
    name from the class name, the widget's layout from its parent (a parent-less widget builds itself),
    Reload through `slicer.util.reloadScriptedModule`, the Logic's singleton parameter node."""
    module = types.ModuleType("slicer.ScriptedLoadableModule")

    class ScriptedLoadableModule:
        def __init__(self, parent):
            import slicer

            self.parent = parent
            self.moduleName = type(self).__name__
            if not hasattr(slicer, "selfTests"):
                slicer.selfTests = {}
            slicer.selfTests[self.moduleName] = self.runTest

        def resourcePath(self, filename):
            return os.path.join(os.path.dirname(self.parent.path), "Resources", filename)

        def runTest(self, msec=100, **kwargs):
            test = getattr(importlib.import_module(type(self).__module__), self.moduleName + "Test")()
            test.messageDelay = msec
            test.runTest(**kwargs)

    class ScriptedLoadableModuleWidget:
        def __init__(self, parent=None):
            import slicer

            name = type(self).__name__
            self.moduleName = name[:-len("Widget")] if name.endswith("Widget") else name
            self.developerMode = False
            if parent:
                self.parent = parent
            else:
                import qt

                self.parent = slicer.qMRMLWidget()
                self.parent.setLayout(qt.QVBoxLayout())
                self.parent.setMRMLScene(slicer.mrmlScene)
            self.layout = self.parent.layout()
            if not parent:
                self.setup()
                self.parent.show()

        def resourcePath(self, filename):
            import slicer

            return os.path.join(os.path.dirname(slicer.util.modulePath(self.moduleName)), "Resources", filename)

        def setup(self):
            pass

        def cleanup(self):
            pass

        def onReload(self):
            import slicer

            slicer.util.reloadScriptedModule(self.moduleName)

    class ScriptedLoadableModuleLogic:
        def __init__(self, parent=None):
            name = type(self).__name__
            self.moduleName = name[:-len("Logic")] if name.endswith("Logic") else name
            self.isSingletonParameterNode = True

        def getParameterNode(self):
            import slicer

            node = slicer.mrmlScene.GetSingletonNode(self.moduleName, "vtkMRMLScriptedModuleNode")
            if node is None:
                node = slicer.mrmlScene.AddNode(self.createParameterNode())
            elif node.GetAttribute("ModuleName") != self.moduleName:
                node.SetAttribute("ModuleName", self.moduleName)
            return node

        def createParameterNode(self):
            import slicer

            node = slicer.mrmlScene.CreateNodeByClass("vtkMRMLScriptedModuleNode")
            node.UnRegister(None)
            node.SetSingletonTag(self.moduleName)
            node.SetAttribute("ModuleName", self.moduleName)
            node.SetName(slicer.mrmlScene.GenerateUniqueName(self.moduleName))
            return node

    class ScriptedLoadableModuleTest(unittest.TestCase):
        def __init__(self, methodName="runTest"):
            super().__init__(methodName)

        def delayDisplay(self, message, msec=1000):
            logging.info(message)

    for cls in (ScriptedLoadableModule, ScriptedLoadableModuleWidget, ScriptedLoadableModuleLogic, ScriptedLoadableModuleTest):
        cls.__module__ = module.__name__
        setattr(module, cls.__name__, cls)
    return module


class _App:
    """The few `slicer.app` members a test might touch."""

    def testingEnabled(self) -> bool:
        return True

    def processEvents(self) -> None:
        pass


def new_scene():
    """A fresh vtkMRMLScene as `slicer.mrmlScene`, with the module logics Slicer would register."""
    import slicer

    scene = slicer.vtkMRMLScene()
    app_logic = slicer.vtkSlicerApplicationLogic()
    app_logic.SetMRMLScene(scene)
    logics = {
        "colors": slicer.vtkMRMLColorLogic(),
        "volumes": slicer.vtkSlicerVolumesLogic(),
        "segmentations": slicer.vtkSlicerSegmentationsModuleLogic(),
        "markups": slicer.vtkSlicerMarkupsLogic(),
        "subjecthierarchy": slicer.vtkSlicerSubjectHierarchyModuleLogic(),
    }
    for name, logic in logics.items():
        if hasattr(logic, "SetMRMLApplicationLogic"):
            logic.SetMRMLApplicationLogic(app_logic)
        logic.SetMRMLScene(scene)
        app_logic.SetModuleLogic(name.capitalize(), logic)
    logics["colors"].AddDefaultColorNodes()
    slicer.mrmlScene = scene
    slicer.modules = types.SimpleNamespace(**{name: types.SimpleNamespace(logic=(lambda lg=lg: lg)) for name, lg in logics.items()})
    slicer.app = _App()
    slicer.app.applicationLogic = lambda: app_logic
    _keep_alive.append((scene, app_logic, logics))
    return scene


_keep_alive: list = []  # VTK objects the scene needs while it lives


def install_scripted_loadable_module() -> None:
    """`from slicer.ScriptedLoadableModule import *` as in Slicer."""
    import slicer

    if "slicer.ScriptedLoadableModule" not in sys.modules:
        module = _scripted_loadable_module()
        sys.modules[module.__name__] = module
        slicer.ScriptedLoadableModule = module


def install() -> None:
    """Make `import qt, ctk, slicer` and `from slicer.ScriptedLoadableModule import *` work (Logic tests:
    inert qt/ctk; the panel tests use pythonqt.py and slicer_app.py in a process of their own)."""
    import slicer

    for name in ("qt", "ctk"):
        sys.modules.setdefault(name, _inert_module(name))
    install_scripted_loadable_module()
    if not hasattr(slicer, "mrmlScene"):
        new_scene()
    if str(MODULE_DIR) not in sys.path:
        sys.path.insert(0, str(MODULE_DIR))


def load_module():
    """The MedSAMLite module (MedSAMLite/MedSAMLite.py), imported on the harness."""
    install()
    return importlib.import_module("MedSAMLite")
