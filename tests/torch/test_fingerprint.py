"""The guard's fingerprints: any change of any number of elements changes them.

Both fingerprints run here: XXH3 (the CPU path) and the accelerator hash, which is plain torch and
runs on CPU tensors too. The patterns are those that escaped the former accelerator fingerprint
(a plain and a position-weighted sum): changes in its null space.
"""

from __future__ import annotations

import pytest
import torch

from frostline.torch import _fingerprint
from frostline.torch._fingerprint import _CHUNK, device_fingerprints, fingerprint

MASK = (1 << 64) - 1


def device_fingerprint(tensor: torch.Tensor) -> torch.Tensor:
    return device_fingerprints([tensor])[0]


FINGERPRINTS = pytest.mark.parametrize("print_fn", [fingerprint, device_fingerprint],
                                       ids=["cpu-xxh3", "device-hash"])


def differ(print_fn, a: torch.Tensor, b: torch.Tensor) -> bool:
    return not torch.equal(print_fn(a), print_fn(b))


def reference_hash(tensor: torch.Tensor) -> list[int]:
    """The accelerator hash written out in Python integers, one element at a time."""
    bits = _fingerprint._words(tensor).tolist()
    out = []
    for seed, shifts, multipliers in _fingerprint._MIXERS:
        total = 0
        for position, word in enumerate(bits):
            x = (((position % (1 << 32)) << 32) | (word & 0xFFFFFFFF)) + seed & MASK
            for shift, multiplier in zip(shifts, (*multipliers, None)):
                x ^= x >> shift
                if multiplier is not None:
                    x = x * multiplier & MASK
            total = (total + x) & MASK
        out.append(total - (1 << 64) if total >= 1 << 63 else total)
    return out


@FINGERPRINTS
def test_plus_one_minus_two_plus_one_ulp_on_neighbours_is_caught(print_fn):
    tensor = torch.rand(10_000, generator=torch.Generator().manual_seed(0)) + 1.0
    changed = tensor.clone()
    changed.view(torch.int32)[5000:5003] += torch.tensor([1, -2, 1], dtype=torch.int32)
    assert (changed != tensor).sum() == 3
    assert differ(print_fn, tensor, changed)


@FINGERPRINTS
def test_one_and_two_swapped_4096_apart_in_float64_are_caught(print_fn):
    tensor = torch.zeros(10_000, dtype=torch.float64)
    tensor[100], tensor[100 + 4096] = 1.0, 2.0
    swapped = tensor.clone()
    swapped[100], swapped[100 + 4096] = 2.0, 1.0
    assert differ(print_fn, tensor, swapped)


@pytest.mark.slow
@FINGERPRINTS
def test_a_swap_between_pieces_of_a_tensor_over_4m_elements_is_caught(print_fn):
    """Words at the same place in two pieces: only the piece offset tells them apart."""
    tensor = torch.randn(2 * _CHUNK + 17, generator=torch.Generator().manual_seed(1))
    swapped = tensor.clone()
    swapped[[12_345, _CHUNK + 12_345]] = tensor[[_CHUNK + 12_345, 12_345]]
    assert differ(print_fn, tensor, swapped)


@pytest.mark.parametrize("at", [0, 5, 63])
@pytest.mark.parametrize("whole", [False, True], ids=["elements", "whole-pieces"])
def test_the_piece_offset_keeps_pieces_apart(monkeypatch, at, whole):
    """The same logic at 64 words per piece: swaps of elements, and of whole pieces."""
    monkeypatch.setattr(_fingerprint, "_CHUNK", 64)
    tensor = torch.randn(3 * 64 + 9, generator=torch.Generator().manual_seed(at))
    swapped = tensor.clone()
    if whole:
        swapped[:64], swapped[128:192] = tensor[128:192], tensor[:64]
    else:
        swapped[[at, 128 + at]] = tensor[[128 + at, at]]
    assert differ(device_fingerprint, tensor, swapped)


@FINGERPRINTS
def test_one_ulp_change_in_a_large_tensor_changes_the_fingerprint(print_fn):
    tensor = torch.randn(3 * (1 << 20) + 7, generator=torch.Generator().manual_seed(0))
    changed = tensor.clone()
    changed[-2] = torch.nextafter(changed[-2], torch.tensor(float("inf")))
    assert torch.equal(print_fn(tensor), print_fn(tensor.clone()))
    assert differ(print_fn, tensor, changed)


@FINGERPRINTS
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float64, torch.int64,
                                   torch.int8, torch.bool, torch.complex64])
def test_fingerprint_sees_any_change_of_any_dtype(print_fn, dtype):
    tensor = (torch.arange(12) % 2).to(dtype)
    changed = tensor.clone()
    changed[5] = 0 if dtype is not torch.bool else False
    assert torch.equal(print_fn(tensor), print_fn(tensor.clone()))
    assert differ(print_fn, tensor, changed)


@FINGERPRINTS
def test_sign_flips_of_two_float64_elements_are_caught(print_fn):
    """Two top-bit changes cancel in any sum modulo 2**64 of odd multiples of the words."""
    tensor = torch.rand(64, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    flipped = tensor.clone()
    flipped[[7, 30]] *= -1
    assert differ(print_fn, tensor, flipped)


@FINGERPRINTS
def test_fingerprint_of_a_non_contiguous_tensor_follows_its_values(print_fn):
    tensor = torch.randn(8, 6)
    assert torch.equal(print_fn(tensor.t()), print_fn(tensor.t().contiguous()))


def test_device_hash_equals_its_definition_whatever_the_packing(monkeypatch):
    """Small pieces (8 words) make every tensor but one span pieces and buckets."""
    monkeypatch.setattr(_fingerprint, "_CHUNK", 8)
    generator = torch.Generator().manual_seed(0)
    tensors = [torch.randn(5, generator=generator), torch.randn(27, generator=generator),
               torch.randint(-9, 9, (7,), generator=generator), torch.randn(0),
               torch.randn(3, dtype=torch.float64, generator=generator).to(torch.bfloat16)]
    together = device_fingerprints(tensors)
    for tensor, row in zip(tensors, together):
        assert row.tolist() == reference_hash(tensor)
        assert torch.equal(row, device_fingerprint(tensor))


def test_cpu_fingerprint_is_the_xxh3_128_digest_of_the_bytes():
    xxhash = pytest.importorskip("xxhash")
    tensor = torch.tensor([1.5, -2.0, 0.25])
    digest = xxhash.xxh3_128_intdigest(tensor.numpy().tobytes())
    low, high = (v & MASK for v in fingerprint(tensor).tolist())
    assert low | high << 64 == digest
