"""DeferredQuantizer under DDP (2 gloo processes): the pass-through phase passes DDP's strict
unused-parameter check, the k-means sample is gathered from both ranks, and both ranks end
with the same codebook."""

import pytest
import torch
from ddp_workers import spawn
from deferred_workers import scenario_deferred
from safetensors.torch import load_file

from vqlab import kmeans

pytestmark = pytest.mark.distributed
pytest.importorskip("vector_quantize_pytorch")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp-deferred")
    spawn(scenario_deferred, out)  # raises if a rank failed (DDP's check included)
    return out


@pytest.mark.parametrize("name", ["embedding", "peer"])
def test_both_ranks_end_with_one_codebook_fitted_on_both_samples(runs, name):
    r0, r1 = (load_file(str(runs / f"{name}.rank{r}.safetensors")) for r in (0, 1))
    assert torch.equal(r0["fit"], r1["fit"]) and torch.equal(r0["final"], r1["final"])
    assert not torch.equal(r0["sample"], r1["sample"])  # the ranks saw different data
    both = torch.cat([r0["sample"], r1["sample"]])  # gathered in rank order
    assert torch.equal(r0["fit"], kmeans(both, 8, iters=3, seed=0).centroids)
