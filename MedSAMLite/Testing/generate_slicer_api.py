"""Write slicer_api.json: what PythonQt shows of the Slicer/CTK classes the panel uses, and the signatures
of `slicer.util` (and 5.12's `slicer.packaging`), for each supported Slicer release.

Read from Slicer's and CTK's own sources at each release tag (CTK at the commit Slicer's SuperBuild
pins), never copied: only names, signal/slot signatures and parameter lists are kept. The panel
stand-ins (slicer_app.py) show only the intersection over the releases, and the `slicer.util` the
module sees accepts only calls that every release accepts.

    python MedSAMLite/Testing/generate_slicer_api.py --slicer <Slicer git dir> --ctk <CTK git dir>

(the git directories of clones of github.com/Slicer/Slicer and github.com/commontk/CTK; no work tree
needed). PythonQt's rules applied: a C++ method is visible when it is a public slot or Q_INVOKABLE
(CTK's wrapper generator adds constructors only); signals and Q_PROPERTYs are visible; base classes
are followed down to Qt's own.
"""
from __future__ import annotations

import argparse
import ast
import json
import re
import subprocess
from pathlib import Path

RELEASES = {"5.6": "v5.6.2", "5.8": "v5.8.1", "5.10": "v5.10.0", "5.12": "v5.12.3"}
# class -> header path, in Slicer ("slicer") or CTK ("ctk")
HEADERS = {
    "ctkCollapsibleButton": ("ctk", "Libs/Widgets/ctkCollapsibleButton.h"),
    "ctkLayoutManager": ("ctk", "Libs/Widgets/ctkLayoutManager.h"),
    "ctkLayoutFactory": ("ctk", "Libs/Widgets/ctkLayoutFactory.h"),
    "qMRMLWidget": ("slicer", "Libs/MRML/Widgets/qMRMLWidget.h"),
    "qMRMLNodeComboBox": ("slicer", "Libs/MRML/Widgets/qMRMLNodeComboBox.h"),
    "qMRMLSegmentSelectorWidget": ("slicer", "Libs/MRML/Widgets/qMRMLSegmentSelectorWidget.h"),
    "qMRMLSegmentEditorWidget": ("slicer", "Modules/Loadable/Segmentations/Widgets/qMRMLSegmentEditorWidget.h"),
    "qMRMLAbstractViewWidget": ("slicer", "Libs/MRML/Widgets/qMRMLAbstractViewWidget.h"),
    "qMRMLSliceWidget": ("slicer", "Libs/MRML/Widgets/qMRMLSliceWidget.h"),
    "qMRMLLayoutManager": ("slicer", "Libs/MRML/Widgets/qMRMLLayoutManager.h"),
    "qSlicerLayoutManager": ("slicer", "Base/QTGUI/qSlicerLayoutManager.h"),
    "qSlicerWidget": ("slicer", "Base/QTGUI/qSlicerWidget.h"),
    "qSlicerAbstractModuleWidget": ("slicer", "Base/QTGUI/qSlicerAbstractModuleWidget.h"),
    "qSlicerAbstractModuleRepresentation": ("slicer", "Base/QTCore/qSlicerAbstractModuleRepresentation.h"),
    "qSlicerScriptedLoadableModuleWidget": ("slicer", "Base/QTGUI/qSlicerScriptedLoadableModuleWidget.h"),
    "qSlicerSegmentEditorAbstractEffect": ("slicer", "Modules/Loadable/Segmentations/EditorEffects/qSlicerSegmentEditorAbstractEffect.h"),
    "qSlicerSegmentEditorScriptedEffect": ("slicer", "Modules/Loadable/Segmentations/EditorEffects/qSlicerSegmentEditorScriptedEffect.h"),
}
PYTHON_MODULES = {"slicer.util": "Base/Python/slicer/util.py", "slicer.packaging": "Base/Python/slicer/packaging.py"}


def git_show(git_dir: Path, revision: str, path: str):
    result = subprocess.run(["git", "--git-dir", str(git_dir), "show", f"{revision}:{path}"], capture_output=True, text=True)
    return result.stdout if result.returncode == 0 else None


def ctk_commit(slicer: Path, tag: str) -> str:
    text = git_show(slicer, tag, "SuperBuild/External_CTK.cmake")
    match = re.search(r'Slicer_\$\{proj\}_GIT_TAG\s*"([0-9a-f]{40})"', text)
    if not match:
        raise SystemExit(f"no CTK commit in {tag}:SuperBuild/External_CTK.cmake")
    return match.group(1)


def _strip_comments(text: str) -> str:
    text = re.sub(r"/\*.*?\*/", " ", text, flags=re.S)
    return re.sub(r"//[^\n]*", "", text)


def _parameter_types(params: str) -> str:
    """`const QString& id, int n = 0` -> `const QString&,int` (parameter names and defaults dropped)."""
    types, depth, current = [], 0, ""
    for ch in params + ",":
        if ch in "(<":
            depth += 1
        elif ch in ")>":
            depth -= 1
        if ch == "," and depth == 0:
            types.append(current.strip())
            current = ""
        else:
            current += ch
    out = []
    for p in types:
        if not p or p == "void":
            continue
        p = p.split("=")[0].strip()
        m = re.match(r"^(.*?[\w>\*&\s])\s*\b([A-Za-z_]\w*)$", p)
        if m and re.search(r"[\w>][\s\*&]+$", m.group(1) + " ") and m.group(1).strip() not in ("const", "unsigned", "signed"):
            p = m.group(1).strip()
        out.append(re.sub(r"\s+", " ", p).replace(" *", "*").replace(" &", "&"))
    return ",".join(out)


def parse_header(text: str, name: str) -> dict:
    """Properties, signals, public slots and public Q_INVOKABLE methods of class `name` in a header."""
    text = _strip_comments(text)
    start = re.search(r"class\s+(?:\w+_EXPORT\s+)?" + name + r"\s*(?::\s*([^{]*))?\{", text)
    if not start:
        raise ValueError(f"class {name} not found")
    bases = [b.strip().split()[-1] for b in (start.group(1) or "").split(",") if b.strip()]
    depth, i = 1, start.end()
    while depth:
        depth += {"{": 1, "}": -1}.get(text[i], 0)
        i += 1
    body = text[start.end():i - 1]
    api = {"base": bases[0] if bases else None, "properties": {}, "signals": [], "slots": [], "invokable": []}
    for m in re.finditer(r"Q_PROPERTY\s*\(([^)]*)\)", body):
        words = m.group(1).split()
        split = words.index("READ") if "READ" in words else len(words)
        api["properties"][words[split - 1]] = {"type": " ".join(words[:split - 1]), "write": "WRITE" in words}
    body = re.sub(r"Q_PROPERTY\s*\([^)]*\)", "", body)
    section = "private"  # class default
    # statements at class level: split on ';' and on section labels
    for token in re.split(r"(\b(?:public|protected|private)\s*(?:slots|Q_SLOTS)?\s*:|\b(?:signals|Q_SIGNALS)\s*:|;|\{[^{}]*\})", body):
        if token is None:
            continue
        label = token.strip()
        if re.fullmatch(r"(public|protected|private)\s*(slots|Q_SLOTS)?\s*:", label):
            section = re.sub(r"\s+|:", "", label).replace("Q_SLOTS", "slots")
            continue
        if re.fullmatch(r"(signals|Q_SIGNALS)\s*:", label):
            section = "signals"
            continue
        m = re.search(r"\b([A-Za-z_]\w*)\s*\(([^()]*(?:\([^()]*\)[^()]*)*)\)\s*(const)?\s*(override)?\s*(=\s*0)?\s*$", label)
        if not m or m.group(1) in ("Q_OBJECT", "Q_ENUM", "Q_ENUMS", "Q_FLAGS", "Q_FLAG", "Q_DECLARE_PRIVATE", "Q_DISABLE_COPY",
                                   "QVTK_OBJECT", "Q_DECLARE_FLAGS", name, "~" + name) or label.startswith("~"):
            continue
        if "~" in label.split("(")[0] or "operator" in label:
            continue
        method, signature = m.group(1), f"{m.group(1)}({_parameter_types(m.group(2))})"
        if section == "signals":
            api["signals"].append(signature)
        elif section == "publicslots":
            api["slots"].append(signature)
        elif section == "public" and "Q_INVOKABLE" in label:
            api["invokable"].append(method)
    for key in ("signals", "slots", "invokable"):
        api[key] = sorted(set(api[key]))
    return api


def python_signatures(source: str) -> dict:
    """Module-level functions and classes -> their parameters [name, kind, has_default] (classes: None)."""
    tree = ast.parse(source)
    out = {}
    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            out[node.name] = None
        elif isinstance(node, ast.FunctionDef):
            a = node.args
            params = []
            positional = a.posonlyargs + a.args
            defaults = [False] * (len(positional) - len(a.defaults)) + [True] * len(a.defaults)
            for arg, has_default in zip(positional, defaults):
                params.append([arg.arg, "positional_or_keyword", has_default])
            if a.vararg:
                params.append([a.vararg.arg, "var_positional", False])
            for arg, default in zip(a.kwonlyargs, a.kw_defaults):
                params.append([arg.arg, "keyword_only", default is not None])
            if a.kwarg:
                params.append([a.kwarg.arg, "var_keyword", False])
            out[node.name] = params
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slicer", type=Path, required=True, help="git directory of a Slicer clone")
    parser.add_argument("--ctk", type=Path, required=True, help="git directory of a CTK clone")
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("slicer_api.json"))
    args = parser.parse_args()
    table = {"generated_by": "MedSAMLite/Testing/generate_slicer_api.py", "releases": {}}
    for release, tag in RELEASES.items():
        ctk = ctk_commit(args.slicer, tag)
        classes = {}
        for name, (repo, path) in HEADERS.items():
            text = git_show(args.ctk if repo == "ctk" else args.slicer, ctk if repo == "ctk" else tag, path)
            if text is None:
                raise SystemExit(f"{path} missing at {tag}")
            classes[name] = parse_header(text, name)
        modules = {}
        for module, path in PYTHON_MODULES.items():
            text = git_show(args.slicer, tag, path)
            if text is not None:
                modules[module] = python_signatures(text)
        table["releases"][release] = {"slicer_tag": tag, "ctk_commit": ctk, "classes": classes, "python": modules}
    args.out.write_text(json.dumps(table, indent=1, sort_keys=True) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
