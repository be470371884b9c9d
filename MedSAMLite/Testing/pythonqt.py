"""PythonQt, as Slicer's Python sees Qt, emulated on PySide6 (offscreen) so that tests build the real panel.

What the module code relies on, and how PySide6 differs unless wrapped (see docs/panel_testing.md):
- Qt properties are attributes: `button.enabled = False` goes through `QObject.setProperty` and
  `label.text` reads `QObject.property` (PySide6 would set a Python attribute / return a method).
  Setting a name that is no Qt property raises here (PythonQt would keep a Python attribute that Qt
  never sees: the kind of typo that silently does nothing).
- `obj.connect("clicked(bool)", slot)` with PythonQt's signature strings; a signature the object does
  not have raises here (PythonQt only prints a warning and the slot never runs). Slots are called with
  as many arguments as they accept. An exception in a slot is recorded in `errors` (PythonQt prints it
  and goes on): the tests fail on it.
- enums and flags as PythonQt spells them (`qt.QMessageBox.Ok`, `qt.Qt.WaitCursor`): PySide6's
  forgiving enum lookup gives the same.
- static dialogs that would block (`QFileDialog.getOpenFileName`, which PythonQt returns as one
  string) and `QDesktopServices.openUrl` answer from queues the test fills, and fail when unexpected.
- `qt.QUiLoader().load(qfile)` builds a .ui file with the custom widget classes registered by
  `register_widget` (ctk and qMRML stand-ins), failing on an unknown class, property, signal or slot.
- `run_until(condition)` idles like Slicer's main thread: it HOLDS the GIL while waiting (CTK never
  enables PythonQt's thread support), so Python worker threads only run while the main thread runs
  Python, as in Slicer.
"""
from __future__ import annotations

import ctypes
import importlib.util
import inspect
import logging
import os
import sys
import time
import traceback
import types
import xml.etree.ElementTree as ElementTree

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

# The Qt profile: PySide6 (Qt 6, as Slicer's Qt 6 builds) or PySide2 (Qt 5.15, as Slicer 5.6 to 5.12's
# default builds); MEDSAMLITE_QT=PySide2 or PySide6 picks one, else whichever is installed (PySide6 first).
BINDING = os.environ.get("MEDSAMLITE_QT") or next(
    (name for name in ("PySide6", "PySide2") if importlib.util.find_spec(name) is not None), "PySide6")
if BINDING == "PySide2":
    from PySide2 import QtCore, QtGui, QtWidgets  # noqa: E402
    import shiboken2 as shiboken  # noqa: E402
else:
    from PySide6 import QtCore, QtGui, QtWidgets  # noqa: E402
    import shiboken6 as shiboken  # noqa: E402
QT_VERSION = tuple(int(part) for part in QtCore.qVersion().split(".")[:2])


def _keep_singletons_alive() -> None:
    """PySide6 6.12 on Python 3.11 returns None (void methods) and True (Signal.emit) without a new
    reference, as if they were immortal (they are from Python 3.12 on): every call takes one reference
    away, and a long test run aborted in garbage collection ("deallocating None"). Where a probe shows
    that loss, give None, True and False references enough for any run (what 3.12 does by design)."""
    probe, before = QtCore.QObject(), sys.getrefcount(None)
    for _ in range(10):
        probe.setObjectName("probe")
    if sys.getrefcount(None) < before:
        for singleton in (None, True, False):
            ctypes.c_ssize_t.from_address(id(singleton)).value += 1 << 40


_keep_singletons_alive()

errors: list = []  # exceptions raised in slots
file_dialog_answers: list = []  # what the next QFileDialog.getOpenFileName returns (a path or "")
opened_urls: list = []  # what QDesktopServices.openUrl was asked to open

_NAMESPACES = (QtWidgets, QtGui, QtCore)
_PROPERTIES: dict = {}
_CLASSES: dict = {}
_CUSTOM: dict = {}
_READING: set = set()  # property names being read right now (see PythonQtObject.__getattribute__)


def _record_callback_exception(kind, value, tb):
    """Exceptions that reach the top of a callback Qt, VTK or a timer called (VTK's observer calls end in
    PyErr_Print, i.e. here): printed, as Slicer does, and recorded so that the test fails."""
    logging.error("exception in a callback:\n%s", "".join(traceback.format_exception(kind, value, tb)))
    errors.append(value)


sys.excepthook = _record_callback_exception


def application():
    """The one QApplication of the process."""
    return QtWidgets.QApplication.instance() or QtWidgets.QApplication([sys.argv[0], "-platform", "offscreen"])


def take_errors() -> list:
    """The exceptions raised in slots since the last call (and forget them)."""
    taken = list(errors)
    errors.clear()
    return taken


# -- properties as attributes ----------------------------------------------------------------------------
def _qt_base(cls):
    """The PySide class a PythonQt class or stand-in derives from (its real Qt meta-object)."""
    for base in cls.__mro__:
        if base.__module__.startswith(BINDING):
            return base
    raise TypeError(f"{cls} is no Qt class")


# Properties PythonQt does not show as attributes (its wrappers hide them): `timer.singleShot` is the
# static method, and assigning it raises.
HIDDEN_PROPERTIES = {"QTimer": {"singleShot"}}


def qt_properties(obj) -> frozenset:
    cls = type(obj)
    names = _PROPERTIES.get(cls)
    if names is None:
        meta = QtCore.QObject.metaObject(obj)
        names = {meta.property(i).name() for i in range(meta.propertyCount())}
        for klass in cls.__mro__:
            names -= HIDDEN_PROPERTIES.get(klass.__name__, set())
        names = frozenset(names)
        _PROPERTIES[cls] = names
    return names


_SHADOWED: dict = {}


def _hidden_member(cls, name) -> bool:
    """True when `name` is a member a stand-in class defines (not its Qt base) that PythonQt does not show
    of the real class (`cls.pythonqt_shown`: slots, signals, Q_INVOKABLE, properties; slicer_api.json)."""
    key = (cls, name)
    if key not in _SHADOWED:
        hidden = False
        shown = getattr(cls, "pythonqt_shown", None)
        if shown is not None and name not in shown and not hasattr(_qt_base(cls), name):  # Qt's own (overrides) stay
            for klass in cls.__mro__:
                if klass.__module__.startswith(BINDING) or klass in (PythonQtObject, object):
                    break
                if name in vars(klass):
                    hidden = True
                    break
        _SHADOWED[key] = hidden
    return _SHADOWED[key]


def _normalized(signature: str) -> str:
    return QtCore.QMetaObject.normalizedSignature(signature).data().decode()


def _arity(fn):
    """How many positional arguments `fn` accepts (None: any number)."""
    try:
        parameters = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return None
    count = 0
    for p in parameters:
        if p.kind == p.VAR_POSITIONAL:
            return None
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD):
            count += 1
    return count


def _slot(fn):
    """`fn` called as PythonQt calls a slot: with as many arguments as it takes; errors recorded."""
    n = _arity(fn)

    def call(*args):
        try:
            fn(*(args if n is None else args[:n]))
        except Exception as e:  # noqa: BLE001 - PythonQt prints and goes on; the tests fail on `errors`
            logging.error("exception in a slot:\n%s", traceback.format_exc())
            errors.append(e)

    call.target = fn
    return call


def _find_signal(sender, signature):
    """The bound signal of `sender` for a PythonQt signature, or an error naming what exists."""
    signature = _normalized(signature)
    table = getattr(type(sender), "pythonqt_signals", {})
    if signature in table:
        return QtCore.QObject.__getattribute__(sender, table[signature])
    meta = _qt_base(type(sender)).staticMetaObject
    if meta.indexOfSignal(signature) >= 0:
        return signature
    known = sorted(set(table) | {meta.method(i).methodSignature().data().decode() for i in range(meta.methodCount())
                                  if meta.method(i).methodType() == QtCore.QMetaMethod.Signal})
    raise AttributeError(f"{type(sender).__name__} has no signal {signature!r} (PythonQt would only warn and the "
                         f"slot would never run); it has: {', '.join(known)}")


def connect(sender, signature, fn):
    signal = _find_signal(sender, signature)
    wrapped = _slot(fn)
    if isinstance(signal, str):
        QtCore.QObject.connect(sender, QtCore.SIGNAL(signal), wrapped)
    else:
        signal.connect(wrapped)
    connections = sender.__dict__.setdefault("_pythonqt_connections", [])
    connections.append((_normalized(signature), fn, wrapped))
    return True


def disconnect(sender, signature, fn):
    signature = _normalized(signature)
    connections = sender.__dict__.setdefault("_pythonqt_connections", [])
    for entry in list(connections):
        if entry[0] == signature and entry[1] == fn:
            signal = _find_signal(sender, signature)
            if isinstance(signal, str):
                QtCore.QObject.disconnect(sender, QtCore.SIGNAL(signal), entry[2])
            else:
                signal.disconnect(entry[2])
            connections.remove(entry)
            return True
    return False


def _as_pythonqt(value):
    """A property value as PythonQt converts it: a QStringList is a tuple (PySide gives a list)."""
    return tuple(value) if isinstance(value, list) and all(isinstance(v, str) for v in value) else value


class PythonQtObject:
    """Mixed into every Qt class the module sees: properties as attributes, PythonQt's connect."""

    def __getattribute__(self, name):
        if name[:1] != "_":
            if name in ("connect", "disconnect"):  # PySide6 would answer these itself
                return types.MethodType(getattr(PythonQtObject, "_pythonqt_" + name), self)
            if name in qt_properties(self) and name not in _READING:
                # PySide2 looks up a Python override of a virtual (sizeHint) through this very method while
                # Qt reads the property: that inner lookup must see the method, not the property again.
                if BINDING != "PySide2":
                    return _as_pythonqt(QtCore.QObject.property(self, name))
                _READING.add(name)
                try:
                    return _as_pythonqt(QtCore.QObject.property(self, name))
                finally:
                    _READING.discard(name)
            if name == "name":
                return QtCore.QObject.objectName(self)
            if _hidden_member(type(self), name):
                raise AttributeError(f"{type(self).__name__}.{name}: PythonQt does not show it (in C++ neither a slot, a "
                                     "signal, a Q_PROPERTY nor Q_INVOKABLE in some supported Slicer; slicer_api.json)")
        return super().__getattribute__(name)

    def __setattr__(self, name, value):
        if name[:1] == "_" or (BINDING == "PySide2" and isinstance(getattr(type(self), name, None), QtCore.Signal)):  # PySide2 binds signals so
            return super().__setattr__(name, value)
        if name == "name":
            return QtCore.QObject.setObjectName(self, value)
        if name not in qt_properties(self):
            raise AttributeError(f"{type(self).__name__}.{name}: creating new attributes on C++ objects is not allowed "
                                 "(PythonQt; no Qt property of that name here)")
        if not QtCore.QObject.setProperty(self, name, value):
            raise TypeError(f"{type(self).__name__}.{name} = {value!r}: Qt refused the value")

    def className(self):  # noqa: N802 - PythonQt's name
        """PythonQt gives every wrapped QObject className(): its C++ class name (effects test view types with it)."""
        return QtCore.QObject.metaObject(self).className()

    def _pythonqt_connect(self, *args):
        if len(args) == 2 and isinstance(args[0], str):
            return connect(self, *args)
        if len(args) == 3 and args[0] is self and str(args[1])[:1] == "2":  # PySide2's own signal.connect() comes here
            return QtCore.QObject.connect(*args)
        raise TypeError("PythonQt stand-in: use obj.connect('signal(args)', callable)")

    def _pythonqt_disconnect(self, *args):
        if len(args) == 2 and isinstance(args[0], str):
            return disconnect(self, *args)
        if len(args) == 3 and args[0] is self and str(args[1])[:1] == "2":  # PySide2's own signal.disconnect() comes here
            return QtCore.QObject.disconnect(*args)
        raise TypeError("PythonQt stand-in: use obj.disconnect('signal(args)', callable)")


def pythonqt_class(base):
    """The PythonQt flavour of PySide6 class `base` (one class per base)."""
    cls = _CLASSES.get(base)
    if cls is None:
        cls = type(base.__name__, (PythonQtObject, base), {"__module__": "qt"})
        _CLASSES[base] = cls
    return cls


# -- dialogs and services that would block or leave the process ---------------------------------------------
def widget_argument(value, what="parent"):
    """A `QWidget*` argument as PythonQt converts it: a wrapped widget or None, anything else is refused."""
    if value is not None and not isinstance(value, QtWidgets.QWidget):
        raise TypeError(f"{what}: PythonQt needs a QWidget* (a Qt widget or None), not {type(value).__name__}")
    return value


def _dialog_answer():
    if not file_dialog_answers:
        raise AssertionError("an unexpected file dialog opened")
    return file_dialog_answers.pop(0)


class QFileDialog(PythonQtObject, QtWidgets.QFileDialog):
    """Static dialogs with Qt's parameters (positional or by name), answered from `file_dialog_answers`;
    PythonQt returns the path as one string (getOpenFileNames: a tuple, as QStringList)."""

    @staticmethod
    def getOpenFileName(parent=None, caption="", dir="", filter="", selectedFilter=None, options=0):  # noqa: A002
        widget_argument(parent)
        return str(_dialog_answer())

    @staticmethod
    def getSaveFileName(parent=None, caption="", dir="", filter="", selectedFilter=None, options=0):  # noqa: A002
        widget_argument(parent)
        return str(_dialog_answer())

    @staticmethod
    def getOpenFileNames(parent=None, caption="", dir="", filter="", selectedFilter=None, options=0):  # noqa: A002
        widget_argument(parent)
        return tuple(_dialog_answer())

    @staticmethod
    def getExistingDirectory(parent=None, caption="", dir="", options=0):  # noqa: A002
        widget_argument(parent)
        return str(_dialog_answer())


message_boxes: list = []  # (kind, text) of every message box shown (slicer_app.messages is this list)
message_answers: list = []  # what the next question answers (True = yes/OK); default yes


class QMessageBox(PythonQtObject, QtWidgets.QMessageBox):
    """Static message boxes with Qt's parameters (parent a QWidget* or None), recorded, never shown:
    a question answers from `message_answers` (Yes, or OK when that is offered; else No/Cancel)."""

    @staticmethod
    def _show(kind, parent, title, text, buttons, defaultButton):  # noqa: N803 - Qt's names
        widget_argument(parent)
        message_boxes.append((kind, str(text)))
        if kind != "question":
            return QtWidgets.QMessageBox.Ok
        yes = message_answers.pop(0) if message_answers else True
        offered = QtWidgets.QMessageBox.StandardButtons(buttons) if buttons is not None else QtWidgets.QMessageBox.Yes | QtWidgets.QMessageBox.No
        if yes:
            return QtWidgets.QMessageBox.Yes if offered & QtWidgets.QMessageBox.Yes else QtWidgets.QMessageBox.Ok
        return QtWidgets.QMessageBox.No if offered & QtWidgets.QMessageBox.No else QtWidgets.QMessageBox.Cancel

    @staticmethod
    def question(parent, title, text, buttons=None, defaultButton=None):  # noqa: N803
        return QMessageBox._show("question", parent, title, text, buttons, defaultButton)

    @staticmethod
    def information(parent, title, text, buttons=None, defaultButton=None):  # noqa: N803
        return QMessageBox._show("info", parent, title, text, buttons, defaultButton)

    @staticmethod
    def warning(parent, title, text, buttons=None, defaultButton=None):  # noqa: N803
        return QMessageBox._show("warning", parent, title, text, buttons, defaultButton)

    @staticmethod
    def critical(parent, title, text, buttons=None, defaultButton=None):  # noqa: N803
        return QMessageBox._show("error", parent, title, text, buttons, defaultButton)


class QDesktopServices:
    @staticmethod
    def openUrl(url):
        opened_urls.append(url.toString() if hasattr(url, "toString") else str(url))
        return True


# -- .ui files ----------------------------------------------------------------------------------------------
def register_widget(cls):
    """Make `cls` (a stand-in of a designer plugin widget: ctk, qMRML) known to QUiLoader."""
    _CUSTOM[cls.__name__] = cls
    return cls


def _widget_class(name):
    if name in _CUSTOM:
        return _CUSTOM[name]
    base = getattr(QtWidgets, name, None)
    if base is None:
        raise ValueError(f".ui: unknown widget class {name!r} (no stand-in registered)")
    return pythonqt_class(base)


def _value(element):
    """A .ui property value."""
    kind = element.tag
    text = element.text or ""
    if kind == "string":
        return text
    if kind == "bool":
        return text == "true"
    if kind == "number":
        return int(text)
    if kind == "double":
        return float(text)
    if kind == "stringlist":
        return [s.text or "" for s in element.findall("string")]
    if kind == "rect":
        return QtCore.QRect(*(int(element.find(k).text) for k in ("x", "y", "width", "height")))
    if kind == "size":
        return QtCore.QSize(*(int(element.find(k).text) for k in ("width", "height")))
    if kind == "cstring":
        return QtCore.QByteArray(text.encode())
    if kind in ("uint", "longlong", "ulonglong"):
        return int(text)
    if kind == "float":
        return float(text)
    if kind == "char":
        return chr(int(element.find("unicode").text)) if element.find("unicode") is not None else text
    if kind in ("point", "pointf"):
        cls = QtCore.QPoint if kind == "point" else QtCore.QPointF
        return cls(*((int if kind == "point" else float)(element.find(k).text) for k in ("x", "y")))
    if kind == "sizef":
        return QtCore.QSizeF(*(float(element.find(k).text) for k in ("width", "height")))
    if kind == "rectf":
        return QtCore.QRectF(*(float(element.find(k).text) for k in ("x", "y", "width", "height")))
    if kind == "url":
        return QtCore.QUrl(element.find("string").text or "")
    if kind == "color":
        rgb = [int(element.find(k).text) for k in ("red", "green", "blue")]
        return QtGui.QColor(*rgb, int(element.get("alpha", "255")))
    if kind == "cursorShape":
        return QtGui.QCursor(getattr(QtCore.Qt, text))
    if kind == "cursor":
        return QtGui.QCursor(QtCore.Qt.CursorShape(int(text)))
    if kind == "sizepolicy":
        policy = QtWidgets.QSizePolicy(getattr(QtWidgets.QSizePolicy, element.get("hsizetype")),
                                       getattr(QtWidgets.QSizePolicy, element.get("vsizetype")))
        policy.setHorizontalStretch(int(element.find("horstretch").text))
        policy.setVerticalStretch(int(element.find("verstretch").text))
        return policy
    if kind == "font":
        font = QtGui.QFont()
        for key, setter, convert in (("family", font.setFamily, str), ("pointsize", font.setPointSize, int),
                                     ("bold", font.setBold, lambda t: t == "true"), ("italic", font.setItalic, lambda t: t == "true"),
                                     ("underline", font.setUnderline, lambda t: t == "true")):
            if element.find(key) is not None:
                setter(convert(element.find(key).text))
        return font
    if kind in ("iconset", "pixmap"):  # Slicer's resources (":/Icons/...") are not here: an icon of the file if it exists
        path = (element.find("normaloff").text if element.find("normaloff") is not None else text).strip()
        if kind == "pixmap":
            return QtGui.QPixmap(path)
        return QtGui.QIcon.fromTheme(element.get("theme")) if element.get("theme") else QtGui.QIcon(path)
    if kind in ("enum", "set"):
        value = None
        for part in text.split("|"):
            scope, _, member = part.strip().rpartition("::")
            item = getattr(QtCore.Qt if scope == "Qt" else getattr(QtWidgets, scope), member)
            value = item if value is None else value | item
        return value
    raise ValueError(f".ui: property type {kind!r} not handled by the stand-in loader")


class QUiLoader:
    """Builds a .ui file as Slicer's QUiLoader does, with the stand-ins as designer plugins."""

    def load(self, qfile, parent=None):
        tree = ElementTree.parse(qfile.fileName())
        root = tree.getroot()
        for custom in root.iter("customwidget"):
            _widget_class(custom.find("class").text)
        self._named = {}
        widget = self._widget(root.find("widget"), parent)
        for connection in root.iter("connection"):
            sender, signal, receiver, slot = (connection.find(k).text for k in ("sender", "signal", "receiver", "slot"))
            self._connect(self._named[sender], signal, self._named[receiver], slot)
        return widget

    def _properties(self, obj, element):
        for prop in element.findall("property"):
            name = prop.get("name")
            value = _value(prop[0])
            if name == "geometry" and element.tag == "widget" and obj.parent() is not None:
                continue  # designer geometry of a child in a layout: the layout decides
            if prop.get("stdset") == "0":  # a dynamic property: Qt's loader sets it whatever the class has
                QtCore.QObject.setProperty(obj, name, value)
                continue
            setattr(obj, name, value)

    def _widget(self, element, parent):
        cls = _widget_class(element.get("class"))
        widget = cls(parent) if parent is not None else cls()
        widget.setObjectName(element.get("name"))
        self._named[element.get("name")] = widget
        self._properties(widget, element)
        layout = element.find("layout")
        if layout is not None:
            self._layout(layout, widget)
        for child in element.findall("widget"):
            self._widget(child, widget)
        return widget

    def _layout(self, element, owner_widget=None, parent_widget=None):
        """A layout and its items; `owner_widget` gets it as its layout, `parent_widget` parents its widgets."""
        cls = pythonqt_class(getattr(QtWidgets, element.get("class")))
        layout = cls(owner_widget) if owner_widget is not None else cls()
        layout.setObjectName(element.get("name"))
        self._named[element.get("name")] = layout
        parent_widget = owner_widget or parent_widget
        rows = {}
        for item in element.findall("item"):
            child = item[0]
            if child.tag == "widget":
                thing = self._widget(child, parent_widget)
            elif child.tag == "layout":
                thing = self._layout(child, parent_widget=parent_widget)
            elif child.tag == "spacer":
                vertical = _value(child.find("property[@name='orientation']")[0]) == QtCore.Qt.Vertical
                hint = _value(child.find("property[@name='sizeHint']")[0])
                grow, fixed = QtWidgets.QSizePolicy.Expanding, QtWidgets.QSizePolicy.Minimum
                thing = QtWidgets.QSpacerItem(hint.width(), hint.height(), fixed if vertical else grow, grow if vertical else fixed)
            else:
                raise ValueError(f".ui: layout item {child.tag!r} not handled")
            if isinstance(layout, QtWidgets.QFormLayout):
                cells = rows.setdefault(int(item.get("row")), {})
                cells["span" if item.get("colspan") == "2" else int(item.get("column"))] = thing
            elif isinstance(thing, QtWidgets.QLayout):
                layout.addLayout(thing)
            elif isinstance(thing, QtWidgets.QSpacerItem):
                layout.addItem(thing)
            else:
                layout.addWidget(thing)
        for row in sorted(rows):
            cells = rows[row]
            if "span" in cells:
                layout.addRow(cells["span"])
            else:
                layout.addRow(cells.get(0), cells.get(1))
        return layout

    @staticmethod
    def _connect(sender, signal, receiver, slot):
        slot = _normalized(slot)
        table = getattr(type(receiver), "pythonqt_slots", {})
        if slot in table:
            target = getattr(receiver, table[slot])
        else:
            meta = _qt_base(type(receiver)).staticMetaObject
            if meta.indexOfSlot(slot) < 0:
                raise AttributeError(f".ui connection: {type(receiver).__name__} has no slot {slot!r}")
            target = getattr(receiver, slot.split("(")[0])
        connect(sender, signal, target)


# -- the module `qt` ------------------------------------------------------------------------------------------
def qt_module() -> types.ModuleType:
    """`import qt` as in Slicer: Qt classes with PythonQt's behaviour, plus QUiLoader."""
    module = sys.modules.get("qt")
    if module is not None and getattr(module, "__pythonqt_standin__", False):
        return module
    module = types.ModuleType("qt", "PythonQt's `qt` module, emulated on PySide6 (MedSAMLite/Testing/pythonqt.py)")
    module.__pythonqt_standin__ = True
    module.QUiLoader = QUiLoader
    module.QFileDialog = QFileDialog
    module.QMessageBox = QMessageBox
    module.QDesktopServices = QDesktopServices

    def __getattr__(name):
        for namespace in _NAMESPACES:
            obj = getattr(namespace, name, None)
            if obj is not None:
                break
        else:
            raise AttributeError(f"module 'qt' has no attribute {name!r}")
        if isinstance(obj, type) and issubclass(obj, QtCore.QObject):
            obj = pythonqt_class(obj)
        setattr(module, name, obj)
        return obj

    module.__getattr__ = __getattr__
    return module


# -- Slicer's main-thread idle ----------------------------------------------------------------------------
_LIBC = ctypes.PyDLL(None)  # PyDLL: calls keep the GIL


def idle(seconds: float) -> None:
    """Wait while holding the GIL, as Slicer's main thread does inside Qt's event loop."""
    _LIBC.usleep(ctypes.c_uint(int(seconds * 1e6)))


def process_events() -> None:
    """What one turn of Slicer's event loop does: pending events, timers, and deleteLater()s."""
    application().processEvents()
    QtCore.QCoreApplication.sendPostedEvents(None, QtCore.QEvent.DeferredDelete)


def run_until(condition, timeout: float = 60.0, step: float = 0.01) -> None:
    """Run Qt's event loop (timers fire, slots run) until `condition()` is true; idle holding the GIL."""
    end = time.monotonic() + timeout
    while True:
        process_events()
        if condition():
            return
        if time.monotonic() > end:
            raise TimeoutError(f"condition not met within {timeout} s")
        idle(step)


def run_for(seconds: float, step: float = 0.01) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        process_events()
        idle(step)
