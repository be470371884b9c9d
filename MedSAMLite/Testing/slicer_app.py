"""Slicer's application around MedSAMLite's panel, for tests: the real module file, the real scene.

On top of `harness.py` (slicer-core's MRML scene and module logics) and `pythonqt.py` (Qt as PythonQt
shows it), this adds what Slicer's application gives a scripted module's widget:
- `ctk` and `slicer.qMRML*` stand-ins of the widgets the .ui uses. Each exposes only what PythonQt
  shows of the real class (from its header: Q_PROPERTY, signals, slots, Q_INVOKABLE, plus the Qt base
  class), in PythonQt's spelling, so that a method the real class lacks fails here too. Node combo
  boxes list the real scene's nodes (filtered as the real ones do) and emit
  `currentNodeChanged(vtkMRMLNode*)`; the segment selector follows the segmentation's segments.
- `slicer.app` (testingEnabled() False, as for a user: error boxes go to `messages`), its layout
  manager with a Red slice view on a real vtkMRMLSliceNode, `slicer.modules.<name>` for the module and
  the Segment Editor (whose Undo uses Slicer's real vtkSegmentationHistory, as the editor does).
- `open_module()`: MedSAMLite.py executed as a plain module (nothing injected), `MedSAMLite(parent)`,
  then the widget made as Slicer makes it (`MedSAMLiteWidget(moduleWidget)`, `setup()`) and entered.

Use it in a process of its own (the Logic tests' harness puts an inert `qt` into sys.modules).
"""
from __future__ import annotations

import importlib.util
import json
import os
import sys
import types
from pathlib import Path

import harness
import pythonqt
from pythonqt import QtCore, QtGui, QtWidgets, shiboken

Signal, Property = QtCore.Signal, QtCore.Property
PythonQtObject = pythonqt.PythonQtObject
# the module file the panel tests load; test_panel_mutations.py points it at a changed copy
MODULE_FILE = Path(os.environ.get("MEDSAMLITE_PANEL_MODULE_FILE") or harness.MODULE_DIR / "MedSAMLite.py")

API = json.loads((Path(__file__).resolve().with_name("slicer_api.json")).read_text())  # generate_slicer_api.py
RELEASES = tuple(sorted(API["releases"], key=lambda r: tuple(map(int, r.split(".")))))  # supported Slicer releases, oldest first


def _shown_in(release, name):
    """(members, properties) PythonQt shows of class `name` in `release`, with its bases in the table."""
    members, properties = set(), set()
    classes = API["releases"][release]["classes"]
    while name in classes:
        api = classes[name]
        properties |= set(api["properties"])
        members |= set(api["properties"]) | set(api["invokable"])
        members |= {signature.split("(")[0] for signature in api["signals"] + api["slots"]}
        name = api["base"]
    return members, properties


def shown(name):
    """What PythonQt shows of class `name` in every supported release (their intersection)."""
    members = set.intersection(*(_shown_in(release, name)[0] for release in RELEASES))
    return frozenset(members)


def shows(real_name):
    """Class decorator: the stand-in answers only what PythonQt shows of `real_name` in every release."""
    def decorate(cls):
        cls.pythonqt_shown = shown(real_name)
        cls.pythonqt_class = real_name
        return cls
    return decorate


def _signature(params):
    import inspect

    kinds = {"positional_or_keyword": inspect.Parameter.POSITIONAL_OR_KEYWORD, "var_positional": inspect.Parameter.VAR_POSITIONAL,
             "keyword_only": inspect.Parameter.KEYWORD_ONLY, "var_keyword": inspect.Parameter.VAR_KEYWORD}
    return inspect.Signature([inspect.Parameter(name, kinds[kind], default=None if has_default else inspect.Parameter.empty)
                              for name, kind, has_default in params])


def check_call(module, name, args, kwargs, releases=None):
    """Raise as the oldest failing release would: `module.name` missing there, or the call does not fit
    its parameters (e.g. pip_install(..., constraints=...) before 5.12)."""
    for release in releases or RELEASES:
        table = API["releases"][release]["python"].get(module, {})
        if name not in table:
            raise AttributeError(f"module '{module}' has no attribute '{name}' in Slicer {release}")
        if table[name] is not None:
            try:
                _signature(table[name]).bind(*args, **kwargs)
            except TypeError as e:
                raise TypeError(f"{module}.{name}() in Slicer {release}: {e}") from None


def _called_from_the_module(frame) -> bool:
    path = Path(frame.f_code.co_filename).resolve()
    return path.name == "MedSAMLite.py" or "MedSAMLiteLib" in path.parts


class _UtilAsInEveryRelease(types.ModuleType):
    """`slicer.util` as the module sees it: a function it calls must exist, with the arguments given, in
    every supported release (slicer_api.json); slicer-core's own util is 5.13's. Replacements a test puts
    in (stand-in pip_install, messageBox) are checked the same way."""

    def __getattribute__(self, name):
        value = super().__getattribute__(name)
        if name[:1] != "_" and isinstance(value, types.FunctionType) and _called_from_the_module(sys._getframe(1)):
            def checked(*args, **kwargs):
                check_call("slicer.util", name, args, kwargs)
                return value(*args, **kwargs)
            return checked
        return value


messages: list = pythonqt.message_boxes  # (kind, text) of every message box the module showed
touched: set = set()  # object names of the controls a test used as a user does (see test_panel.py)
answers: list = pythonqt.message_answers  # what the next confirmation box answers (True = OK); default OK


def _scene_ids(scene, cls="vtkMRMLNode"):
    nodes = scene.GetNodesByClass(cls)
    return [nodes.GetItemAsObject(i) for i in range(nodes.GetNumberOfItems())]


# -- ctk ----------------------------------------------------------------------------------------------------
@pythonqt.register_widget
@shows("ctkCollapsibleButton")
class ctkCollapsibleButton(PythonQtObject, QtWidgets.QAbstractButton):
    """ctkCollapsibleButton: a button whose contents collapse (Q_PROPERTY collapsed, collapsedHeight, flat)."""

    pythonqt_signals = {"contentsCollapsed(bool)": "contentsCollapsed"}
    contentsCollapsed = Signal(bool)

    def __init__(self, parent=None):
        super().__init__(parent)
        self._collapsed, self._collapsedHeight, self._flat = False, 14, False
        self.setContentsMargins(0, self._HEADER + 2, 0, 0)
        self.setCheckable(True)
        self.setChecked(True)
        self.toggled.connect(lambda checked: self._setCollapsed(not checked))

    _HEADER = 24

    def childEvent(self, event):  # noqa: N802 - Qt's name: contents added while collapsed stay hidden
        super().childEvent(event)
        child = event.child()
        if event.added() and self._collapsed and isinstance(child, QtWidgets.QWidget):
            child.setVisible(False)

    def paintEvent(self, event):  # noqa: N802 - Qt's name: a header button with its arrow and text
        painter = QtGui.QPainter(self)
        option = QtWidgets.QStyleOptionButton()
        option.initFrom(self)
        option.rect = QtCore.QRect(0, 0, QtWidgets.QWidget.width(self), self._HEADER)
        option.text = ("\u25b8 " if self._collapsed else "\u25be ") + QtWidgets.QAbstractButton.text(self)
        self.style().drawControl(QtWidgets.QStyle.CE_PushButton, option, painter, self)
        painter.end()

    # setCollapsed, setCollapsedHeight, setFlat: plain public C++ methods, which PythonQt does not show
    def _setCollapsed(self, collapsed):
        if collapsed == self._collapsed:
            return
        self._collapsed = bool(collapsed)
        self.setChecked(not collapsed)
        for child in self.findChildren(QtWidgets.QWidget, options=QtCore.Qt.FindDirectChildrenOnly):
            child.setVisible(not collapsed)
        self.contentsCollapsed.emit(self._collapsed)

    def _setCollapsedHeight(self, height):
        self._collapsedHeight = int(height)

    def _setFlat(self, flat):
        self._flat = bool(flat)

    collapsed = Property(bool, lambda self: self._collapsed, _setCollapsed)
    collapsedHeight = Property(int, lambda self: self._collapsedHeight, _setCollapsedHeight)
    flat = Property(bool, lambda self: self._flat, _setFlat)


def ctk_module() -> types.ModuleType:
    module = types.ModuleType("ctk", "CTK's Python module, only the stand-ins of MedSAMLite/Testing/slicer_app.py")
    module.ctkCollapsibleButton = ctkCollapsibleButton
    return module


# -- qMRML --------------------------------------------------------------------------------------------------
@pythonqt.register_widget
@shows("qMRMLWidget")
class qMRMLWidget(PythonQtObject, QtWidgets.QWidget):
    """qMRMLWidget: mrmlScene(), setMRMLScene(vtkMRMLScene*), mrmlSceneChanged(vtkMRMLScene*)."""

    pythonqt_signals = {"mrmlSceneChanged(vtkMRMLScene*)": "_sceneChanged"}
    pythonqt_slots = {"setMRMLScene(vtkMRMLScene*)": "setMRMLScene"}
    _sceneChanged = Signal(object)

    def __init__(self, parent=None):
        super().__init__(parent)
        self._scene = None

    def mrmlScene(self):
        return self._scene

    def setMRMLScene(self, scene):
        if scene is self._scene:
            return
        self._scene = scene
        self._sceneChanged.emit(scene)


class _Observing:
    """VTK observations owned by a stand-in widget, removed when the widget is destroyed (as qvtk does)."""

    def _observe(self, obj, event, callback):
        observations = self.__dict__.get("_observations")
        if observations is None:
            observations = self._observations = []
            self.destroyed.connect(lambda *_, o=observations: [x.RemoveObserver(t) for x, t in o])

        def call(*args, widget=self):  # a destroyed widget never answers (qvtk disconnects on destruction)
            if shiboken.isValid(widget):
                callback()

        observations.append((obj, obj.AddObserver(event, call)))

    def _unobserve(self, obj=None):
        observations = self.__dict__.get("_observations", [])
        for observed, tag in list(observations):
            if obj is None or observed is obj:
                observed.RemoveObserver(tag)
                observations.remove((observed, tag))


@pythonqt.register_widget
@shows("qMRMLNodeComboBox")
class qMRMLNodeComboBox(_Observing, PythonQtObject, QtWidgets.QWidget):
    """qMRMLNodeComboBox on a real scene: lists nodes of `nodeTypes` (children too unless
    showChildNodeTypes is false; not hideChildNodeTypes; not hidden-from-editors unless showHidden;
    matching addAttribute filters), a "None" item first when noneEnabled. A current node that leaves
    the scene is replaced by a neighbour, as QComboBox does; without "None" the first node added to an
    empty list becomes current."""

    pythonqt_signals = {
        "currentNodeChanged(vtkMRMLNode*)": "_nodeChanged", "currentNodeChanged(bool)": "_validChanged",
        "currentNodeIDChanged(QString)": "currentNodeIDChanged", "nodeAdded(vtkMRMLNode*)": "_nodeAdded",
        "nodeAboutToBeRemoved(vtkMRMLNode*)": "_nodeAboutToBeRemoved", "nodeActivated(vtkMRMLNode*)": "_nodeActivated",
        "nodeAddedByUser(vtkMRMLNode*)": "_nodeAddedByUser",
    }
    pythonqt_slots = {"setMRMLScene(vtkMRMLScene*)": "setMRMLScene", "setCurrentNode(vtkMRMLNode*)": "setCurrentNode",
                      "setCurrentNodeID(QString)": "setCurrentNodeID", "setCurrentNodeIndex(int)": "setCurrentNodeIndex"}
    _nodeChanged, _validChanged, currentNodeIDChanged = Signal(object), Signal(bool), Signal(str)
    _nodeAdded, _nodeAboutToBeRemoved, _nodeActivated, _nodeAddedByUser = Signal(object), Signal(object), Signal(object), Signal(object)

    def __init__(self, parent=None):
        super().__init__(parent)
        self._scene, self._current, self._items = None, None, []
        self._nodeTypes, self._hideChildNodeTypes, self._attributes = [], [], []
        self._flags = {"showHidden": False, "showChildNodeTypes": True, "noneEnabled": False, "addEnabled": True,
                       "removeEnabled": True, "editEnabled": False, "renameEnabled": False, "selectNodeUponCreation": True}
        self._baseName, self._noneDisplay = "", "None"
        layout = QtWidgets.QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        self._combo = QtWidgets.QComboBox(self)  # what the user clicks
        layout.addWidget(self._combo)
        self._combo.activated.connect(self._userChose)

    # what the user does: pick an entry of the drop-down
    def _userChose(self, index):
        self.setCurrentNodeIndex(index)
        if self.currentNode() is not None:
            self._nodeActivated.emit(self.currentNode())

    def _user_select(self, node):
        """Test helper: the user picks `node` (or "None") in the drop-down."""
        touched.add(QtCore.QObject.objectName(self))
        index = self._items.index(node.GetID() if node is not None else None)
        self._combo.setCurrentIndex(index)
        self._combo.activated.emit(index)

    # the list
    def _accepts(self, node):
        if node.GetHideFromEditors() and not self._flags["showHidden"]:
            return False
        if any(node.IsA(t) for t in self._hideChildNodeTypes):
            return False
        if self._flags["showChildNodeTypes"]:
            ok = any(node.IsA(t) for t in self._nodeTypes)
        else:
            ok = node.GetClassName() in self._nodeTypes
        return ok and all(not node.IsA(t) or node.GetAttribute(a) == v for t, a, v in self._attributes)

    def _refresh(self):
        nodes = [n for n in _scene_ids(self._scene) if self._accepts(n)] if self._scene is not None else []
        old_items, old_current = self._items, self._current
        self._items = ([None] if self._flags["noneEnabled"] else []) + [n.GetID() for n in nodes]
        self._combo.blockSignals(True)
        self._combo.clear()
        for item in self._items:
            self._combo.addItem(self._noneDisplay if item is None else self._scene.GetNodeByID(item).GetName())
        self._combo.blockSignals(False)
        current = old_current
        if current not in self._items:  # removed: a neighbour in the old list, as QComboBox picks
            current = None
            if old_current is not None and old_current in old_items:
                position = old_items.index(old_current)
                survivors = [i for i in old_items[position + 1:] + old_items[:position][::-1] if i in self._items]
                current = survivors[0] if survivors else None
        if current is None and not self._flags["noneEnabled"] and self._items:
            current = self._items[0]
        self._setCurrent(current)

    def _setCurrent(self, nodeID):
        if nodeID is not None and nodeID not in self._items:
            return
        if self._items:
            self._combo.setCurrentIndex(self._items.index(nodeID))
        if nodeID == self._current:
            return
        self._current = nodeID
        node = self.currentNode()
        self._nodeChanged.emit(node)
        self._validChanged.emit(node is not None)
        self.currentNodeIDChanged.emit(nodeID or "")

    # Q_INVOKABLE
    def mrmlScene(self):
        return self._scene

    def currentNode(self):
        return self._scene.GetNodeByID(self._current) if self._scene is not None and self._current else None

    def nodeCount(self):
        return len([i for i in self._items if i is not None])

    def nodeFromIndex(self, index):
        ids = [i for i in self._items if i is not None]
        return self._scene.GetNodeByID(ids[index]) if 0 <= index < len(ids) else None

    def addAttribute(self, nodeType, attributeName, attributeValue=None):
        self._attributes.append((nodeType, attributeName, attributeValue))
        self._refresh()

    def removeAttribute(self, nodeType, attributeName):
        self._attributes = [a for a in self._attributes if a[:2] != (nodeType, attributeName)]
        self._refresh()

    # slots
    def setMRMLScene(self, scene):
        self._unobserve()
        self._scene = scene
        if scene is not None:
            for event in (scene.NodeAddedEvent, scene.NodeRemovedEvent, scene.EndCloseEvent, scene.EndImportEvent,
                          scene.EndBatchProcessEvent):
                self._observe(scene, event, self._sceneChangedLater)
        self._refresh()

    def _sceneChangedLater(self):
        if self._scene is not None and not self._scene.IsBatchProcessing():
            self._refresh()

    def setCurrentNode(self, node):
        if isinstance(node, str):
            return self.setCurrentNodeID(node)
        self._setCurrent(node.GetID() if node is not None else (None if self._flags["noneEnabled"] else self._current))

    def setCurrentNodeID(self, nodeID):
        self._setCurrent(nodeID or (None if self._flags["noneEnabled"] else self._current))

    def setCurrentNodeIndex(self, index):
        if 0 <= index < len(self._items):
            self._setCurrent(self._items[index])

    def addNode(self, nodeType=None):
        node = self._scene.AddNewNodeByClass(nodeType or self._nodeTypes[0], self._baseName or None)
        self._nodeAddedByUser.emit(node)
        if self._flags["selectNodeUponCreation"]:
            self.setCurrentNode(node)
        return node

    def removeCurrentNode(self):
        node = self.currentNode()
        if node is not None:
            self._scene.RemoveNode(node)

    # Q_PROPERTY
    def _flag(name):  # noqa: N805 - property factory
        def set_(self, value):
            self._flags[name] = bool(value)
            self._refresh()
        return Property(bool, lambda self: self._flags[name], set_)

    def _setNodeTypes(self, types_):
        self._nodeTypes = list(types_)
        self._refresh()

    def _setHideChildNodeTypes(self, types_):
        self._hideChildNodeTypes = list(types_)
        self._refresh()

    def _setNoneDisplay(self, text):
        self._noneDisplay = text
        self._refresh()

    currentNodeID = Property(str, lambda self: self._current or "", setCurrentNodeID)
    nodeTypes = Property("QStringList", lambda self: list(self._nodeTypes), _setNodeTypes)
    hideChildNodeTypes = Property("QStringList", lambda self: list(self._hideChildNodeTypes), _setHideChildNodeTypes)
    baseName = Property(str, lambda self: self._baseName, lambda self, v: setattr(self, "_baseName", v))
    noneDisplay = Property(str, lambda self: self._noneDisplay, _setNoneDisplay)
    showHidden, showChildNodeTypes, noneEnabled = _flag("showHidden"), _flag("showChildNodeTypes"), _flag("noneEnabled")
    addEnabled, removeEnabled, editEnabled = _flag("addEnabled"), _flag("removeEnabled"), _flag("editEnabled")
    renameEnabled, selectNodeUponCreation = _flag("renameEnabled"), _flag("selectNodeUponCreation")
    del _flag


@pythonqt.register_widget
@shows("qMRMLSegmentSelectorWidget")
class qMRMLSegmentSelectorWidget(_Observing, qMRMLWidget):
    """qMRMLSegmentSelectorWidget (single selection): the segments of the current segmentation, "None"
    first when noneEnabled. As the real widget: the list is rebuilt when a segment is added, removed or
    modified, keeping the current segment; when the current segment is removed the first segment is
    selected; setCurrentSegmentID("") selects "None"; an unknown ID changes nothing."""

    pythonqt_signals = {**qMRMLWidget.pythonqt_signals, "currentNodeChanged(vtkMRMLNode*)": "_nodeChanged",
                        "currentNodeChanged(bool)": "_validChanged", "currentSegmentChanged(QString)": "currentSegmentChanged",
                        "segmentSelectionChanged(QStringList)": "segmentSelectionChanged"}
    pythonqt_slots = {**qMRMLWidget.pythonqt_slots, "setCurrentNode(vtkMRMLNode*)": "setCurrentNode",
                      "setCurrentNodeID(QString)": "setCurrentNodeID", "setCurrentSegmentID(QString)": "setCurrentSegmentID"}
    _nodeChanged, _validChanged = Signal(object), Signal(bool)
    currentSegmentChanged, segmentSelectionChanged = Signal(str), Signal(list)

    def __init__(self, parent=None):
        super().__init__(parent)
        self._node, self._segmentId, self._items = None, "", []
        self._flags = {"noneEnabled": False, "editEnabled": False, "segmentationNodeSelectorVisible": True,
                       "multiSelection": False, "horizontalLayout": False, "selectNodeUponCreation": True}
        layout = QtWidgets.QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        self._combo = QtWidgets.QComboBox(self)
        layout.addWidget(self._combo)
        self._combo.currentIndexChanged.connect(self._indexChanged)

    def _user_select(self, segmentId):
        """Test helper: the user picks `segmentId` ("" = None) in the drop-down."""
        touched.add(QtCore.QObject.objectName(self))
        self._combo.setCurrentIndex(self._items.index(segmentId or None))

    def _indexChanged(self, index):
        if self._node is None or not 0 <= index < len(self._items):
            return
        self._segmentId = self._items[index] or ""
        self.currentSegmentChanged.emit(self._segmentId)

    def _populate(self):
        segmentation = self._node.GetSegmentation() if self._node is not None else None
        ids = list(segmentation.GetSegmentIDs()) if segmentation is not None else []
        self._combo.blockSignals(True)
        self._combo.clear()
        self._items = []
        if ids:
            self._items = ([None] if self._flags["noneEnabled"] else []) + ids
            for item in self._items:
                self._combo.addItem("None" if item is None else segmentation.GetSegment(item).GetName())
        self._combo.blockSignals(False)
        if not ids:
            return
        if (self._flags["noneEnabled"] and not self._segmentId) or self._segmentId in ids:
            self._combo.blockSignals(True)
            self.setCurrentSegmentID(self._segmentId)
            self._combo.blockSignals(False)
        else:
            self._combo.blockSignals(True)
            self._combo.setCurrentIndex(-1)
            self._combo.blockSignals(False)
            self._combo.setCurrentIndex(1 if self._flags["noneEnabled"] else 0)

    # Q_INVOKABLE
    def currentNode(self):
        return self._node

    def currentNodeID(self):
        return self._node.GetID() if self._node is not None else ""

    def currentSegmentID(self):
        return self._segmentId

    def segmentIDs(self):
        return [i for i in self._items if i is not None]

    def selectedSegmentIDs(self):
        return [self._segmentId] if self._segmentId else []

    # slots
    def setCurrentNode(self, node):
        node = node if node is not None and node.IsA("vtkMRMLSegmentationNode") else None
        if node is self._node:
            return
        if self._node is not None:
            self._unobserve(self._node)
        self._node = node
        if node is not None:
            for event in (slicer_module().vtkSegmentation.SegmentAdded, slicer_module().vtkSegmentation.SegmentRemoved,
                          slicer_module().vtkSegmentation.SegmentModified):
                self._observe(node, event, self._populate)
        self._populate()
        self._nodeChanged.emit(node)
        self._validChanged.emit(node is not None)

    def setCurrentNodeID(self, nodeID):
        self.setCurrentNode(self._scene.GetNodeByID(nodeID) if self._scene is not None and nodeID else None)

    def setCurrentSegmentID(self, segmentId):
        if not segmentId and self._flags["noneEnabled"]:
            self._combo.setCurrentIndex(0)
            return
        if segmentId in self._items and self._combo.currentIndex() != self._items.index(segmentId):
            self._combo.setCurrentIndex(self._items.index(segmentId))

    def _flag(name):  # noqa: N805 - property factory
        def set_(self, value):
            self._flags[name] = bool(value)
            if name == "noneEnabled":
                self._populate()
        return Property(bool, lambda self: self._flags[name], set_)

    noneEnabled, editEnabled, multiSelection = _flag("noneEnabled"), _flag("editEnabled"), _flag("multiSelection")
    segmentationNodeSelectorVisible, horizontalLayout = _flag("segmentationNodeSelectorVisible"), _flag("horizontalLayout")
    selectNodeUponCreation = _flag("selectNodeUponCreation")
    del _flag


@shows("qMRMLSegmentEditorWidget")
class qMRMLSegmentEditorWidget(qMRMLWidget):
    """The Segment Editor's editor: the segmentation it edits, its editor node (masking, overwrite),
    saveStateForUndo/undo/redo on Slicer's own vtkSegmentationHistory, as the real widget keeps them."""

    pythonqt_slots = {**qMRMLWidget.pythonqt_slots, "saveStateForUndo()": "saveStateForUndo", "undo()": "undo", "redo()": "redo"}

    def __init__(self, parent=None):
        super().__init__(parent)
        self._node, self._editorNode = None, None
        self._history = slicer_module().vtkSegmentationHistory()
        self._undoEnabled = True

    def mrmlSegmentEditorNode(self):
        return self._editorNode

    def setMRMLSegmentEditorNode(self, node):
        self._editorNode = node

    def segmentationNode(self):
        return self._node

    def segmentationNodeID(self):
        return self._node.GetID() if self._node is not None else ""

    def setSegmentationNode(self, node):
        self._node = node
        self._history.RemoveAllStates()
        self._history.SetSegmentation(node.GetSegmentation() if node is not None else None)

    def saveStateForUndo(self):
        if self._undoEnabled and self._node is not None:
            self._history.SaveState()

    def undo(self):
        if self._node is not None and self._history.IsRestorePreviousStateAvailable():
            self._history.RestorePreviousState()

    def redo(self):
        if self._node is not None and self._history.IsRestoreNextStateAvailable():
            self._history.RestoreNextState()

    undoEnabled = Property(bool, lambda self: self._undoEnabled, lambda self, v: setattr(self, "_undoEnabled", bool(v)))


# -- Slicer's application --------------------------------------------------------------------------------
def slicer_module():
    import slicer

    return slicer


@shows("qMRMLSliceWidget")
class qMRMLSliceWidget(PythonQtObject, QtWidgets.QWidget):
    """A slice view: mrmlSliceNode() is the real vtkMRMLSliceNode of its layout name in the scene."""

    def __init__(self, name):
        super().__init__()
        self._name = name

    def mrmlSliceNode(self):
        scene = slicer_module().mrmlScene
        for node in _scene_ids(scene, "vtkMRMLSliceNode"):
            if node.GetLayoutName() == self._name:
                return node
        node = slicer_module().vtkMRMLSliceNode()
        node.SetLayoutName(self._name)
        node.SetName(self._name)
        node.SetSingletonTag(self._name)
        node.SetDimensions(256, 256, 1)
        node.SetFieldOfView(250.0, 250.0, 1.0)
        node.SetSliceToRASByNTP(0, 0, 1, 1, 0, 0, 0, 0, 0, 0)  # axial, as Red starts
        node.UpdateMatrices()
        return scene.AddNode(node)

    # a Q_PROPERTY (QString): PythonQt gives the property, so `sliceWidget.sliceOrientation` is a str
    sliceOrientation = Property(str, lambda self: self.mrmlSliceNode().GetOrientation())


@shows("qSlicerLayoutManager")
class qSlicerLayoutManager(PythonQtObject, QtCore.QObject):
    def __init__(self):
        super().__init__()
        self._views = {name: qMRMLSliceWidget(name) for name in ("Red", "Yellow", "Green")}

    def sliceWidget(self, name):
        return self._views.get(name)

    def sliceViewNames(self):
        return list(self._views)


class qSlicerModuleManager(PythonQtObject, QtCore.QObject):
    moduleAboutToBeUnloaded = Signal(str)
    pythonqt_signals = {"moduleAboutToBeUnloaded(QString)": "moduleAboutToBeUnloaded"}


class SlicerApp:
    """`slicer.app` as a user has it (testingEnabled() False: message boxes are shown, here recorded)."""

    applicationName = "Slicer"

    def __init__(self, app_logic):
        self._qt = pythonqt.application()
        self._logic = app_logic
        self._layout = qSlicerLayoutManager()
        self._modules = qSlicerModuleManager()
        self.overrideCursorDepth = 0

    def testingEnabled(self):
        return False

    def processEvents(self, *args):
        self._qt.processEvents()

    def setOverrideCursor(self, cursor):
        self.overrideCursorDepth += 1

    def restoreOverrideCursor(self):
        self.overrideCursorDepth -= 1

    def layoutManager(self):
        return self._layout

    def moduleManager(self):
        return self._modules

    def applicationLogic(self):
        return self._logic

    def connect(self, signal, slot):
        """PythonQt's connect for the one application signal a module uses: startupCompleted(), emitted
        once after every module was made (`complete_startup`)."""
        if signal != "startupCompleted()":
            raise ValueError(f"qSlicerApplication stand-in: no signal {signal}")
        self._startupSlots = getattr(self, "_startupSlots", []) + [slot]

    def complete_startup(self):
        for slot in getattr(self, "_startupSlots", []):
            slot()
        self._startupSlots = []


class ModuleParent:
    """qSlicerScriptedLoadableModule as the module class sees it (title, categories, ..., path)."""

    __slots__ = ("title", "categories", "dependencies", "contributors", "helpText", "acknowledgementText", "path", "icon", "hidden")

    def __init__(self, path):
        self.path = str(path)
        self.hidden = False


@shows("qSlicerScriptedLoadableModuleWidget")
class qSlicerScriptedLoadableModuleWidget(PythonQtObject, QtWidgets.QWidget):
    """The module panel Slicer makes around the Python widget: isEntered, enter/exit, reload, self(),
    setMRMLScene (a qSlicerWidget: its mrmlScene() is not shown to Python)."""

    pythonqt_signals = {"mrmlSceneChanged(vtkMRMLScene*)": "_sceneChanged"}
    pythonqt_slots = {"setMRMLScene(vtkMRMLScene*)": "setMRMLScene"}
    _sceneChanged = Signal(object)

    def __init__(self, module):
        super().__init__()
        self._module, self._self, self._entered, self._scene = module, None, False, None
        self.setLayout(QtWidgets.QVBoxLayout())
        self.setMRMLScene(slicer_module().mrmlScene)

    def setMRMLScene(self, scene):
        if scene is not self._scene:
            self._scene = scene
            self._sceneChanged.emit(scene)

    def self(self):
        return self._self

    def _instantiate(self):
        """setPythonSource: a new Python widget of the (re)loaded module's class, then setup()."""
        module = sys.modules[self._module.pythonModuleName]
        self._self = getattr(module, self._module.name + "Widget")(self)
        setattr(slicer_module().modules, self._module.name + "Widget", self._self)
        self._self.setup()

    def reload(self):
        self._instantiate()

    def enter(self):
        assert not self._entered
        self._entered = True
        if hasattr(self._self, "enter"):
            self._self.enter()

    def exit(self):
        assert self._entered
        self._entered = False
        if hasattr(self._self, "exit"):
            self._self.exit()

    isEntered = Property(bool, lambda self: self._entered)


class Module:
    """`slicer.modules.<name>`: path, widgetRepresentation()."""

    def __init__(self, name, path, widget=None):
        self.name, self.path, self.pythonModuleName = name, str(path), name
        self._widget = widget

    def widgetRepresentation(self):
        if self._widget is None:
            self._widget = qSlicerScriptedLoadableModuleWidget(self)
            self._widget._instantiate()
        return self._widget


class SegmentEditorModule:
    """`slicer.modules.segmenteditor`: widgetRepresentation().self().editor is the editor widget."""

    def __init__(self):
        self._representation = None

    def widgetRepresentation(self):
        if self._representation is None:
            editor = qMRMLSegmentEditorWidget()
            editor.setMRMLScene(slicer_module().mrmlScene)
            node = slicer_module().mrmlScene.AddNewNodeByClass("vtkMRMLSegmentEditorNode")
            editor.setMRMLSegmentEditorNode(node)
            python_self = types.SimpleNamespace(editor=editor)
            self._representation = types.SimpleNamespace(self=lambda: python_self)
        return self._representation


def _record_message(text, parent=None, **kwargs):
    """slicer.util.messageBox: its parent a QWidget* or None (PythonQt), recorded, answered from `answers`."""
    import qt

    pythonqt.widget_argument(parent)
    kind = "question" if kwargs.get("icon") == qt.QMessageBox.Question else "error" if kwargs.get("icon") == qt.QMessageBox.Critical else "info"
    messages.append((kind, text))
    if kind == "question":
        return qt.QMessageBox.Ok if (answers.pop(0) if answers else True) else qt.QMessageBox.Cancel
    return qt.QMessageBox.Ok


def install():
    """Put Slicer's application, Qt (PythonQt flavour), ctk and qMRML around a fresh scene."""
    import slicer
    import slicer.util

    pythonqt.application()
    sys.modules["qt"] = pythonqt.qt_module()
    sys.modules["ctk"] = ctk_module()
    harness.install_scripted_loadable_module()
    for cls in (qMRMLWidget, qMRMLNodeComboBox, qMRMLSegmentSelectorWidget):
        setattr(slicer, cls.__name__, cls)
    scene = harness.new_scene()
    slicer.app = SlicerApp(slicer.app.applicationLogic())
    slicer.modules.segmenteditor = SegmentEditorModule()
    main_window = QtWidgets.QMainWindow()
    slicer.util.mainWindow = lambda: main_window
    slicer.util.messageBox = _record_message
    slicer.util.__class__ = _UtilAsInEveryRelease
    if str(harness.MODULE_DIR) not in sys.path:
        sys.path.insert(0, str(harness.MODULE_DIR))
    import segment_editor

    segment_editor.install()  # the Segment Editor's effects (the module registers one at start-up)
    return scene


def load_module_file(name="MedSAMLite", path=MODULE_FILE):
    """Execute the module file as Slicer does: a plain new module, nothing injected into it."""
    spec = importlib.util.spec_from_file_location(name, str(path))
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def open_module(name="MedSAMLite", path=MODULE_FILE):
    """Load the module as Slicer does at start-up and open its panel: module class, widget, setup(),
    enter(). Returns the panel (the qSlicerScriptedLoadableModuleWidget stand-in)."""
    import slicer

    python_module = load_module_file(name, path)
    parent = ModuleParent(path)
    getattr(python_module, name)(parent)
    slicer.app.complete_startup()
    module = Module(name, path)
    setattr(slicer.modules, name.lower(), module)
    panel = module.widgetRepresentation()
    panel.show()
    panel.enter()
    return panel


def close_scene():
    """File > Close Scene: Slicer's scene Clear (start/end close events), singletons kept."""
    slicer_module().mrmlScene.Clear(0)


def reset_scene():
    """A new scene for the next test with the module reconnected (what setup() observed is gone)."""
    return install()


__all__ = ["install", "open_module", "load_module_file", "close_scene", "messages", "answers", "Path"]
