"""Test-wide settings.

One torch thread per test process: the suite is many tiny ops, where a second thread mostly
waits on the first, and on a shared 2-core machine oversubscribed threads made single tests
10-30x slower. Benchmarks, not tests, measure speed.
"""

import torch

torch.set_num_threads(1)
