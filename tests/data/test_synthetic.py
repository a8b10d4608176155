import torch

from vqlab.data.synthetic import gaussian_mixture, mixture_means


def test_mixture_shapes_labels_and_statistics():
    train, test = gaussian_mixture(peaks=10, dim=8, std=0.5, samples_per_peak=1000, spread=10)
    assert train.x.shape == (10000, 8) and test.x.shape == (2000, 8)
    assert torch.equal(torch.bincount(train.labels), torch.full((10,), 1000))
    assert torch.equal(train.means, test.means)
    assert train.means.abs().max() <= 10
    for k in range(10):
        pts = train.x[train.labels == k]
        assert torch.allclose(pts.mean(0), train.means[k], atol=0.1)
        assert abs(pts.std(0).mean().item() - 0.5) < 0.03
    assert not torch.equal(train.x[:2000], test.x)  # independent noise


def test_mixture_is_seeded():
    a, _ = gaussian_mixture(seed=3)
    b, _ = gaussian_mixture(seed=3)
    c, _ = gaussian_mixture(seed=4)
    assert torch.equal(a.x, b.x) and not torch.equal(a.x, c.x)
    assert torch.equal(mixture_means(4, 2, 1.0, 0), mixture_means(4, 2, 1.0, 0))
