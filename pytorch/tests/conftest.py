"""pytest setup: the core's test helpers (MedSAMLite/Testing/tests: `reference`) are importable."""
import sys
from pathlib import Path

CORE_TESTS = Path(__file__).resolve().parents[2] / "MedSAMLite" / "Testing" / "tests"
if str(CORE_TESTS) not in sys.path:
    sys.path.insert(0, str(CORE_TESTS))
