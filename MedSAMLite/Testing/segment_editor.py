"""The Segment Editor around a scripted effect, for tests: what Slicer's editor and effect adaptor show to an
effect's Python (qSlicerSegmentEditorAbstractEffect.h and qSlicerSegmentEditorScriptedEffect.h, Slicer
5.6-5.12: Q_PROPERTY, Q_INVOKABLE, slots), on the real scene of `slicer_app.py`.

Real: the effect file executed as Slicer's adaptor does (`setPythonSource`: module named after its folder,
class after its file), the registration through `qSlicerSegmentEditorEffectFactory`, the editor node
(masking, overwrite, intensity range), and the edits themselves: `modifySelectedSegmentByLabelmap` runs
Slicer's own `vtkSlicerSegmentEditorLogic.ModifySegmentByLabelmap` (the code the editor runs since 5.9; the
same rules lived in the effect base before) and undo is its segmentation history. Views: the layout's
slice widgets on real vtkMRMLSliceNodes; a mouse event at view xy reaches the effect through a real
vtkRenderWindowInteractor, and `xyToRas` goes through the slice node's own XYToRAS.
Emulated: the effect's options frame is a plain QFrame with a QFormLayout; actors are recorded, not drawn.
"""
from __future__ import annotations

import importlib.util
import sys
import types

import pythonqt
import slicer_app

QtCore, QtGui, QtWidgets = pythonqt.QtCore, pythonqt.QtGui, pythonqt.QtWidgets  # the Qt profile's binding

PythonQtObject = pythonqt.PythonQtObject
Property = QtCore.Property


class qSlicerSegmentEditorAbstractEffect:
    """The enum an effect reads from `slicer.qSlicerSegmentEditorAbstractEffect` (values as in the header)."""

    ModificationModeSet, ModificationModeAdd, ModificationModeRemove, ModificationModeRemoveAll = range(4)


def _LOGIC_MODES():  # noqa: N802 - the logic's enum values in the order of the effect's
    import slicer

    logic = slicer.vtkSlicerSegmentEditorLogic
    return (logic.ModificationModeSet, logic.ModificationModeAdd, logic.ModificationModeRemove, logic.ModificationModeRemoveAll)


class qSlicerSegmentEditorEffectFactory:
    """`slicer.qSlicerSegmentEditorEffectFactory.instance()`: registerEffect, registeredEffects."""

    _instance = None

    def __init__(self):
        self._effects = []

    @classmethod
    def instance(cls):
        if cls._instance is None:
            cls._instance = cls()
        return cls._instance

    def registerEffect(self, effect):
        if any(e.name == effect.name for e in self._effects):
            return False
        self._effects.append(effect)
        return True

    def registeredEffects(self):
        return list(self._effects)


def _load_effect_class(path):
    """As qSlicerSegmentEditorScriptedEffect::setPythonSource: module = the file's folder, class = its name
    (+ "Effect")."""
    from pathlib import Path

    path = Path(path)
    module_name, class_name = path.parent.name, path.stem if path.stem.endswith("Effect") else path.stem + "Effect"
    module = sys.modules.get(module_name)
    if module is None or not hasattr(module, class_name):
        spec = importlib.util.spec_from_file_location(module_name, str(path))
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        spec.loader.exec_module(module)
    return getattr(module, class_name)


@slicer_app.shows("qSlicerSegmentEditorScriptedEffect")
class qSlicerSegmentEditorScriptedEffect(PythonQtObject, QtCore.QObject):
    """The C++ adaptor as PythonQt shows it to the effect (`self.scriptedEffect`)."""

    pythonqt_slots = {"updateGUIFromMRML()": "updateGUIFromMRML", "updateMRMLFromGUI()": "updateMRMLFromGUI"}

    def __init__(self, parent=None):
        super().__init__(parent)
        self._name, self._title, self._perSegment, self._requireSegments = "", "", True, True
        self._self, self._source, self._editor = None, "", None
        self._frame = QtWidgets.QFrame()
        self._frame.setLayout(QtWidgets.QFormLayout())
        self._actors = {}

    title = Property(str, lambda self: self._title or self._name, lambda self, v: setattr(self, "_title", v))
    perSegment = Property(bool, lambda self: self._perSegment, lambda self, v: setattr(self, "_perSegment", bool(v)))
    requireSegments = Property(bool, lambda self: self._requireSegments, lambda self, v: setattr(self, "_requireSegments", bool(v)))
    showEffectCursorInSliceView = Property(bool, lambda self: True, lambda self, v: None)
    showEffectCursorInThreeDView = Property(bool, lambda self: False, lambda self, v: None)

    def __setattr__(self, key, value):
        """`name` is the effect's Q_PROPERTY here (PythonQtObject maps it to objectName; kept equal)."""
        if key == "name":
            self._name = value
        return super().__setattr__(key, value)

    # -- qSlicerSegmentEditorScriptedEffect ---------------------------------------------------------------
    def pythonSource(self):
        return self._source

    def setPythonSource(self, path):
        cls = _load_effect_class(path)
        self._source = str(path)
        self._self = cls(self)
        return True

    def self(self):
        return self._self

    # -- what the editor calls (virtual methods the Python class implements) ------------------------------
    def _call(self, method, *args, default=None):
        fn = getattr(self._self, method, None)
        return fn(*args) if fn is not None else default

    def updateGUIFromMRML(self):
        self._call("updateGUIFromMRML")

    def updateMRMLFromGUI(self):
        self._call("updateMRMLFromGUI")

    # -- Q_INVOKABLE of qSlicerSegmentEditorAbstractEffect ------------------------------------------------
    def parameterSetNode(self):
        return self._editor.mrmlSegmentEditorNode() if self._editor is not None else None

    def scene(self):
        return slicer_app.slicer_module().mrmlScene

    def optionsFrame(self):
        return self._frame

    def optionsLayout(self):
        return self._frame.layout()

    def addOptionsWidget(self, widget):  # a QWidget or a QLayout
        self._frame.layout().addRow(widget)

    def addLabeledOptionsWidget(self, label, widget):
        text = QtWidgets.QLabel(label)
        self._frame.layout().addRow(text, widget)
        return text

    def addActor2D(self, viewWidget, actor):
        self._actors.setdefault(viewWidget, []).append(actor)

    def removeActor2D(self, viewWidget, actor):
        self._actors.get(viewWidget, []).remove(actor)

    def cursorOn(self, viewWidget):
        pass

    def cursorOff(self, viewWidget):
        pass

    def _parameterName(self, name):
        return f"{self._name}.{name}"

    def parameter(self, name):
        return self.parameterSetNode().GetAttribute(self._parameterName(name)) or ""

    def integerParameter(self, name):
        return int(self.parameter(name) or 0)

    def doubleParameter(self, name):
        return float(self.parameter(name) or 0.0)

    def parameterDefined(self, name):
        return self.parameterSetNode().GetAttribute(self._parameterName(name)) is not None

    def setParameter(self, name, value):
        self.parameterSetNode().SetAttribute(self._parameterName(name), str(value))

    def setParameterDefault(self, name, value):
        if not self.parameterDefined(name):
            self.setParameter(name, value)

    def confirmCurrentSegmentVisible(self):
        return 1

    def saveStateForUndo(self):
        self._editor.saveStateForUndo()

    def modifySelectedSegmentByLabelmap(self, modifierLabelmap, modificationMode, bypassMasking=False):
        editor = self._editor
        node = editor.mrmlSegmentEditorNode()
        editor._logic.ModifySegmentByLabelmap(node.GetSegmentationNode(), node.GetSelectedSegmentID(), modifierLabelmap,
                                              _LOGIC_MODES()[int(modificationMode)], True, bool(bypassMasking))

    @staticmethod
    def viewNode(viewWidget):
        return viewWidget.mrmlSliceNode()

    @staticmethod
    def xyzToRas(xyz, sliceWidget):
        m = sliceWidget.mrmlSliceNode().GetXYToRAS()
        ras = m.MultiplyPoint((xyz.x(), xyz.y(), xyz.z(), 1.0))
        return QtGui.QVector3D(*ras[:3])

    @staticmethod
    def xyToRas(xy, sliceWidget):
        return qSlicerSegmentEditorScriptedEffect.xyzToRas(QtGui.QVector3D(xy.x(), xy.y(), 0.0), sliceWidget)

    @staticmethod
    def scheduleRender(viewWidget):
        pass

    @staticmethod
    def forceRender(viewWidget):
        pass


class qMRMLSegmentEditorWidget(slicer_app.qMRMLSegmentEditorWidget):
    """The editor with effects: the registered effects (cloned, options frames set up once, as the widget
    does), the active one, the source volume and selected segment on its node; edits and undo through
    Slicer's vtkSlicerSegmentEditorLogic on the editor's segmentation history."""

    def __init__(self, parent=None):
        super().__init__(parent)
        import slicer

        self._logic = slicer.vtkSlicerSegmentEditorLogic()
        self._logic.SetMRMLScene(slicer.mrmlScene)
        self._logic.SetSegmentationHistory(self._history)
        self._effects = {}
        self._active = None

    def setMRMLSegmentEditorNode(self, node):
        super().setMRMLSegmentEditorNode(node)
        self._logic.SetSegmentEditorNode(node)

    def setSegmentationNode(self, node):
        super().setSegmentationNode(node)
        self._editorNode.SetAndObserveSegmentationNode(node)
        self._logic.SetSegmentationNode(node)

    def setSourceVolumeNode(self, node):
        self._editorNode.SetAndObserveSourceVolumeNode(node)
        self._logic.SetSourceVolumeNode(node)

    def setCurrentSegmentID(self, segmentId):
        self._editorNode.SetSelectedSegmentID(segmentId)

    def saveStateForUndo(self):
        if self._undoEnabled and self._node is not None:
            self._logic.SaveStateForUndo()

    def effectByName(self, name):
        if name not in self._effects:
            for registered in qSlicerSegmentEditorEffectFactory.instance().registeredEffects():
                if registered.name == name:
                    effect = registered.self().clone()
                    effect._editor = self
                    effect.self().setupOptionsFrame()
                    self._effects[name] = effect
        return self._effects.get(name)

    def setActiveEffectByName(self, name):
        effect = self.effectByName(name) if name else None
        if self._active is not None:
            self._active.self().deactivate()
        self._active = effect
        if effect is not None:
            effect.self().activate()

    def activeEffect(self):
        return self._active


# -- a user's mouse and keys in a slice view (test drivers; not the editor's API) ---------------------------
def _event(editor, view, event, xy=(0, 0), keySym="", shift=False, control=False):
    """One VTK event of `view` (a layout name) to the editor's active effect, as the editor forwards it; True
    when the effect took it (the view's own interaction then does not see it)."""
    import vtk

    widget = slicer_app.slicer_module().app.layoutManager().sliceWidget(view)
    interactor = vtk.vtkRenderWindowInteractor()
    interactor.SetEventPosition(int(xy[0]), int(xy[1]))
    interactor.SetKeySym(keySym)
    interactor.SetShiftKey(int(shift))
    interactor.SetControlKey(int(control))
    effect = editor.activeEffect()
    return bool(effect.self().processInteractionEvents(interactor, event, widget)) if effect is not None else False


def drag(editor, view, start, end, steps=3):
    """Left button down at `start`, moved to `end`, released there (view xy, pixels from the bottom-left)."""
    import vtk

    taken = [_event(editor, view, vtk.vtkCommand.LeftButtonPressEvent, start)]
    for i in range(1, steps + 1):
        xy = [start[a] + (end[a] - start[a]) * i / steps for a in range(2)]
        taken.append(_event(editor, view, vtk.vtkCommand.MouseMoveEvent, xy))
    taken.append(_event(editor, view, vtk.vtkCommand.LeftButtonReleaseEvent, end))
    return taken


def key(editor, view, keySym):
    import vtk

    return _event(editor, view, vtk.vtkCommand.KeyPressEvent, keySym=keySym)


def editors_module() -> types.ModuleType:
    """`qSlicerSegmentationsEditorEffectsPythonQt`, the module the template imports to make the adaptor."""
    module = types.ModuleType("qSlicerSegmentationsEditorEffectsPythonQt")
    module.qSlicerSegmentEditorScriptedEffect = qSlicerSegmentEditorScriptedEffect
    return module


def effects_base_module() -> types.ModuleType:
    """`SegmentEditorEffects` as an effect imports it: the scripted base class, written from what Slicer's
    does (keeps the adaptor, registers through the factory, converts view xy with the adaptor)."""
    module = types.ModuleType("SegmentEditorEffects")

    class AbstractScriptedSegmentEditorEffect:
        def __init__(self, scriptedEffect):
            self.scriptedEffect = scriptedEffect

        def register(self):
            import slicer

            slicer.qSlicerSegmentEditorEffectFactory.instance().registerEffect(self.scriptedEffect)

        def cleanup(self):
            pass

        def xyToRas(self, xy, viewWidget):
            import qt

            ras = self.scriptedEffect.xyToRas(qt.QPoint(int(xy[0]), int(xy[1])), viewWidget)
            return [ras.x(), ras.y(), ras.z()]

    AbstractScriptedSegmentEditorEffect.__module__ = module.__name__
    module.AbstractScriptedSegmentEditorEffect = AbstractScriptedSegmentEditorEffect
    return module


class SegmentEditorModule(slicer_app.SegmentEditorModule):
    """`slicer.modules.segmenteditor` whose editor has effects."""

    def widgetRepresentation(self):
        if self._representation is None:
            import slicer

            editor = qMRMLSegmentEditorWidget()
            editor.setMRMLScene(slicer.mrmlScene)
            editor.setMRMLSegmentEditorNode(slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentEditorNode"))
            python_self = types.SimpleNamespace(editor=editor)
            self._representation = types.SimpleNamespace(self=lambda: python_self)
        return self._representation


def install():
    """The Segment Editor's effect machinery into slicer_app's application (slicer_app.install calls it)."""
    import slicer


    sys.modules["qSlicerSegmentationsEditorEffectsPythonQt"] = editors_module()
    sys.modules["SegmentEditorEffects"] = effects_base_module()
    slicer.qSlicerSegmentEditorAbstractEffect = qSlicerSegmentEditorAbstractEffect
    slicer.qSlicerSegmentEditorEffectFactory = qSlicerSegmentEditorEffectFactory
    qSlicerSegmentEditorEffectFactory._instance = None
    slicer.modules.segmenteditor = SegmentEditorModule()
