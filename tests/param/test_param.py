import pytest
import torch

from devvis import param
from devvis.errors import ParameterizationError


@pytest.mark.parametrize("make", [
    lambda: param.image(24, 16, batch=2, seed=0),
    lambda: param.image(24, 16, batch=2, fft=False, seed=0),
    lambda: param.image(24, 16, batch=2, decorrelate=False, seed=0),
    lambda: param.image(24, 16, batch=2, channels=1, seed=0),
    lambda: param.image(24, 16, batch=2, channels=4, seed=0),
    lambda: param.laplacian(24, 16, batch=2, seed=0),
    lambda: param.maco(24, 16, batch=2, seed=0),
    lambda: param.cppn(24, 16, batch=2, seed=0),
], ids=["fft", "pixel", "no-decorrelate", "1ch", "4ch", "laplacian", "maco", "cppn"])
def test_shapes_ranges_seed_and_grad(make):
    p = make()
    img = p()
    assert img.shape[0] == 2 and img.shape[-2:] == (16, 24)
    assert img.min() >= 0 and img.max() <= 1
    assert torch.equal(img, make()())  # same seed, same init
    img.mean().backward()
    assert any(q.grad is not None and q.grad.abs().sum() > 0 for q in p.parameters())


def test_different_seeds_differ():
    assert not torch.equal(param.image(16, seed=0)(), param.image(16, seed=1)())


def test_fft_spectrum_shape_and_decay():
    p = param.fft(16, 12, batch=3)
    assert p.basis.spectrum.shape == (3, 3, 12, 16 // 2 + 1, 2)
    s = p.basis.scale.flatten()
    assert s.max() == pytest.approx(16.0)  # DC clamped at 1 / (1/max(h, w))


def test_decorrelation_matrix_normalized_by_largest_column_norm():
    m = param.COLOR_CORRELATION_NORMALIZED
    assert m.norm(dim=0).max() == pytest.approx(1.0)
    assert torch.allclose(m * param.COLOR_CORRELATION_SVD_SQRT.norm(dim=0).max(), param.COLOR_CORRELATION_SVD_SQRT)


def test_invalid_sizes_raise():
    with pytest.raises(ParameterizationError, match="width"):
        param.image(0)
    with pytest.raises(ParameterizationError, match="basis"):
        param.image(8, basis="wavelet")
