"""The generator of slicer_api.json reads headers as PythonQt sees them, and its output says what the
panel harness relies on (regenerate with generate_slicer_api.py when a release is added)."""
import json
import sys
from pathlib import Path

TESTING = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(TESTING))

import generate_slicer_api  # noqa: E402

HEADER = """
#include "qMRMLWidget.h"
class vtkMRMLNode;
/// \\brief a widget
class Q_EXAMPLE_EXPORT qExampleWidget : public qMRMLWidget
{
  Q_OBJECT
  QVTK_OBJECT
  Q_PROPERTY(QString title READ title WRITE setTitle)
  Q_PROPERTY(QStringList names READ names)
public:
  typedef qMRMLWidget Superclass;
  qExampleWidget(QWidget* parent = nullptr);
  ~qExampleWidget() override;
  void setTitle(const QString& title);   // plain: invisible
  Q_INVOKABLE vtkMRMLNode* currentNode() const;
  Q_INVOKABLE void addAttribute(const QString& nodeType, const QString& name, const QVariant& value = QVariant());
  inline int inlineBody() const { return 1; }
public slots:
  void setCurrentNode(vtkMRMLNode* node);
  virtual void setMRMLScene(vtkMRMLScene* scene) override;
protected slots:
  void onHidden(bool);
signals:
  void currentNodeChanged(vtkMRMLNode*);
  void titleChanged(const QString& newTitle);
protected:
  Q_INVOKABLE void protectedInvokable();
};
"""


def test_header_parser_keeps_what_pythonqt_shows():
    api = generate_slicer_api.parse_header(HEADER, "qExampleWidget")
    assert api["base"] == "qMRMLWidget"
    assert set(api["properties"]) == {"title", "names"} and api["properties"]["names"]["write"] is False
    assert api["slots"] == ["setCurrentNode(vtkMRMLNode*)", "setMRMLScene(vtkMRMLScene*)"]  # public slots only
    assert api["signals"] == ["currentNodeChanged(vtkMRMLNode*)", "titleChanged(const QString&)"]
    assert api["invokable"] == ["addAttribute", "currentNode"]  # public Q_INVOKABLE only; setTitle is invisible


def test_python_signatures():
    table = generate_slicer_api.python_signatures("def f(a, b=1, *args, c, d=2, **kw):\n    pass\nclass C:\n    pass\n")
    assert table["C"] is None
    assert table["f"] == [["a", "positional_or_keyword", False], ["b", "positional_or_keyword", True], ["args", "var_positional", False],
                          ["c", "keyword_only", False], ["d", "keyword_only", True], ["kw", "var_keyword", False]]


def test_the_generated_table_has_every_supported_release():
    table = json.loads((TESTING / "slicer_api.json").read_text())
    assert set(table["releases"]) == set(generate_slicer_api.RELEASES)
    for release, data in table["releases"].items():
        assert data["slicer_tag"] == generate_slicer_api.RELEASES[release] and len(data["ctk_commit"]) == 40
        assert set(data["classes"]) == set(generate_slicer_api.HEADERS), release
        collapsible = data["classes"]["ctkCollapsibleButton"]
        assert "collapsed" in collapsible["properties"] and "setCollapsed" not in collapsible["invokable"]
        assert not any(s.startswith("setCollapsed(") for s in collapsible["slots"])
        assert "sliceOrientation" in data["classes"]["qMRMLSliceWidget"]["properties"]
        assert "setCurrentNode(vtkMRMLNode*)" in data["classes"]["qMRMLNodeComboBox"]["slots"]
        util = data["python"]["slicer.util"]
        assert util["pip_install"][0][0] == "requirements" and "loadUI" in util and util["VTKObservationMixin"] is None
    # what the module relies on: pip_install takes no keyword before 5.12, and 5.12 has slicer.packaging
    assert table["releases"]["5.6"]["python"]["slicer.util"]["pip_install"] == [["requirements", "positional_or_keyword", False]]
    assert "pip_ensure" in table["releases"]["5.12"]["python"]["slicer.packaging"]
    assert "slicer.packaging" not in table["releases"]["5.10"]["python"]
