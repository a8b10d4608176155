"""Test-wide settings.

One torch thread per test process: the suite is many tiny ops, where a second thread mostly
waits on the first, and on a shared 2-core machine oversubscribed threads made single tests
10-30x slower. Benchmarks, not tests, measure speed.

The folders mirror the package: ``tests/quantizers/`` tests ``vqlab/quantizers/``, and a test
of a top-level module (``vqlab/cli.py``) sits at the top as ``tests/test_cli.py``.
"""

import sys
from pathlib import Path

import torch

torch.set_num_threads(1)

# tests/ on the path, so that a test in any folder imports the shared helpers by name
# (``from image_fixtures import image_folder``)
sys.path.insert(0, str(Path(__file__).parent))

try:
    from hypothesis import HealthCheck, settings
except ImportError:  # hypothesis is a test extra; the modules that need it import it themselves
    pass
else:
    # Property tests: bounded and derandomized, so CI runs are fast and reproducible; to hunt
    # further locally, run with --hypothesis-profile=hunt (more examples, fresh randomness).
    settings.register_profile(
        "ci",
        max_examples=40,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
    settings.register_profile(
        "hunt", settings.get_profile("ci"), max_examples=2000, derandomize=False
    )
    settings.load_profile("ci")
