"""ctest entry point inside Slicer: runs the module's own self-test (MedSAMLite.MedSAMLiteTest).

The module is imported inside the test, not at the top, so the unittest loader does not collect
MedSAMLiteTest a second time from this file's namespace.
"""
import unittest


class MedSAMLiteSelfTest(unittest.TestCase):
    def test_module_self_test(self):
        import MedSAMLite

        MedSAMLite.MedSAMLiteTest().runTest()


if __name__ == "__main__":
    unittest.main()
