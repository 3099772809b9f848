import pytest
import torch
import torch.nn.functional as F
from torch import nn

from helpers.bench.linear import PackedLinear, onednn_available, use_packed_linear

pytestmark = pytest.mark.skipif(not onednn_available(), reason="this PyTorch has no oneDNN")


def model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(40, 96), nn.GELU(), nn.Linear(96, 24, bias=False))


@pytest.mark.parametrize("shape", [(5, 40), (2, 7, 40)])
def test_packed_layers_compute_what_nn_linear_does(shape):
    m, x = model(), torch.randn(shape)
    with torch.no_grad():
        expected = m(x)
        assert use_packed_linear(m) == 2 and all(isinstance(m[i], PackedLinear) for i in (0, 2))
        got = m(x)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    assert isinstance(m[0].weight, nn.Parameter) and m[2].bias is None  # the same parameters as before


def test_a_weight_moved_to_bfloat16_in_place_is_packed_again():
    """``module.to(dtype)`` swaps the parameters' data in place: the float32 packing must not be reused."""
    m, x = model(), torch.randn(3, 40)
    use_packed_linear(m)
    with torch.no_grad():
        m(x)
        m.to(torch.bfloat16)
        got = m(x.bfloat16())
        expected = F.linear(F.gelu(F.linear(x.bfloat16(), m[0].weight, m[0].bias)), m[2].weight)
    assert got.dtype == torch.bfloat16
    torch.testing.assert_close(got, expected, atol=2e-2, rtol=2e-2)


def test_a_weight_written_in_place_is_packed_again():
    """Loading new weights (``load_state_dict`` copies in place) keeps the storage: the old pack must not serve."""
    m, x = model(), torch.randn(3, 40)
    use_packed_linear(m)
    with torch.no_grad():
        before = m(x)
        m[2].weight.mul_(2)
        got = m(x)
    torch.testing.assert_close(got, 2 * before, atol=1e-5, rtol=1e-5)


def test_packed_layers_compile_into_one_graph():
    m, x = model(), torch.randn(2, 7, 40)
    use_packed_linear(m)
    with torch.no_grad():
        torch.testing.assert_close(torch.compile(m, fullgraph=True)(x), m(x), atol=1e-5, rtol=1e-5)
