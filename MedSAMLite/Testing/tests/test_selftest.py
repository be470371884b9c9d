"""The module's own self-test (MedSAMLiteTest), run unchanged on slicer-core through the harness."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import harness  # noqa: E402


def test_module_self_test():
    module = harness.load_module()
    harness.new_scene()
    test = module.MedSAMLiteTest()
    test.runTest()
