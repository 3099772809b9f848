import pytest
import torch

from helpers import as_dtype, device_name, half_dtype, make_generators, pick_device, synchronize


def test_pick_device_is_available():
    device = pick_device()
    assert device.type in {"cuda", "mps", "cpu"}
    if not torch.cuda.is_available() and not torch.backends.mps.is_available():
        assert device.type == "cpu"


def test_half_dtype_per_device():
    assert half_dtype("cpu") is torch.bfloat16
    assert half_dtype("cuda") is torch.float16
    assert half_dtype("mps") is torch.float16


@pytest.mark.parametrize(("name", "expected"), [("float32", torch.float32), ("fp16", torch.float16),
                                                ("bfloat16", torch.bfloat16), (None, torch.float32),
                                                (torch.float16, torch.float16)])
def test_as_dtype(name, expected):
    assert as_dtype(name, "cpu") is expected


def test_as_dtype_half_follows_device():
    assert as_dtype("half", "cpu") is torch.bfloat16
    assert as_dtype("half", "cuda") is torch.float16


def test_as_dtype_rejects_unknown_names():
    with pytest.raises(ValueError, match="Unknown dtype 'float8'"):
        as_dtype("float8")


def test_generators_are_on_cpu_and_seeded_in_order():
    gens = make_generators(3, seed=5)
    assert [g.device.type for g in gens] == ["cpu"] * 3
    assert [g.initial_seed() for g in gens] == [5, 6, 7]
    draws = [torch.randn(2, generator=g) for g in gens]
    assert not torch.equal(draws[0], draws[1])
    assert torch.equal(draws[0], torch.randn(2, generator=torch.Generator().manual_seed(5)))


def test_generators_reject_zero():
    with pytest.raises(ValueError, match="at least one"):
        make_generators(0)


def test_synchronize_and_name_on_cpu():
    synchronize("cpu")  # must be a harmless no-op
    assert device_name("cpu").startswith("CPU (")


def test_batches_are_capped_on_mps_only(capsys, simulate_device):
    from helpers import MPS_MAX_BATCH, cap_batch

    assert cap_batch(8, "cpu") == 8 and cap_batch(8, "cuda") == 8
    assert capsys.readouterr().out == ""
    assert cap_batch(8, "mps") == MPS_MAX_BATCH < 8
    assert f"capped to {MPS_MAX_BATCH} on Apple MPS" in capsys.readouterr().out
    assert cap_batch(2, "mps") == 2
    simulate_device("mps")
    assert cap_batch(8) == MPS_MAX_BATCH
    with pytest.raises(ValueError, match="whole number"):
        cap_batch(0, "mps")
