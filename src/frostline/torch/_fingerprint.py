"""Fingerprints of tensors: 128 bits that change whenever any element changes.

The guard keeps no copy of a model, only one fingerprint per watched tensor, computed where the
tensor lives over its exact bytes (bit patterns, not values: ``-0.0`` and ``0.0`` differ, NaN
payloads count).

* On the CPU, XXH3-128 (``xxhash``) of the raw buffer: no copy for a contiguous tensor, about
  10 GB/s on one core (several times faster than ``zlib.crc32``, which it replaces). A change of
  any number of elements, anywhere, leaves the digest the same with probability near 2**-128;
  nothing about the change (neighbours, swaps, sign bits) makes that more likely.
* On accelerators, a hash computed where the tensors live (no tensor leaves the device), by
  about 30 element-wise kernels and one prefix sum per bucket of about 4M words (not fused yet:
  see benchmarks/README.md): the bytes are read as 32-bit words ``w`` (narrower
  elements one word each), each word is tagged with its position ``i`` *within its tensor*
  (``key = i * 2**32 + w``, distinct for every position/value pair), each key goes through two
  different 64-bit bijective mixers (the SplitMix64 / MurmurHash3 finaliser: xor-shift,
  multiply, xor-shift, multiply, xor-shift) and the mixed keys are summed modulo 2**64, one sum
  per mixer. Sums are exact and independent of summation order, so pieces and buckets can be
  reduced in any order; a change replaces the mixed keys of the changed positions by unrelated
  pseudo-random ones, which leave both sums unchanged with probability near 2**-128 (a heuristic
  bound, as for any non-cryptographic hash). Unlike a
  plain and a position-weighted sum (the previous accelerator fingerprint), the hash has no null
  space: ``+1, -2, +1`` ulp on neighbours or a ``1.0 <-> 2.0`` swap change it like any other
  change. Tensors over ``_CHUNK`` words are cut into pieces; each piece carries its *offset* in
  the tensor, so its words keep their true positions (without it, words at the same place in two
  pieces would share a key and swapping them would go unseen). Positions are taken modulo 2**32
  (a tensor of 16 GiB or more repeats keys 2**32 words apart).

The two kinds of fingerprint differ, so a snapshot compares a tensor on the device type it was
taken on.

Example:
    >>> import torch
    >>> t = torch.ones(3)
    >>> u = t.clone(); u[1] = torch.nextafter(u[1], torch.tensor(2.0))
    >>> bool((fingerprint(t) != fingerprint(u)).any())
    True
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import accumulate

import torch
import xxhash

_INT_OF_SIZE = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}
# Words per bucket of the accelerator hash (temporaries: a few int64 per word).
_CHUNK = 1 << 22
_LOW32 = 0xFFFFFFFF
_MASK64 = (1 << 64) - 1
# Two 64-bit mixers (SplitMix64's and MurmurHash3's finaliser constants) and a seed each, so the
# two sums are computed by unrelated functions of the same keys.
_MIXERS = (
    (0x9E3779B97F4A7C15, (30, 27, 31), (0xBF58476D1CE4E5B9, 0x94D049BB133111EB)),
    (0xD6E8FEB86659FD93, (33, 33, 33), (0xFF51AFD7ED558CCD, 0xC4CEB9FE1A85EC53)),
)


def fingerprint(tensor: torch.Tensor) -> torch.Tensor:
    """Two int64 numbers that change whenever any element of ``tensor`` changes, on its device.

    Example:
        >>> a = torch.tensor([1.0, 2.0]); b = torch.tensor([2.0, 1.0])
        >>> torch.equal(fingerprint(a), fingerprint(b))
        False
    """
    return fingerprints([tensor])[0]


def fingerprints(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    """Fingerprints of tensors on one device, shape ``(len(tensors), 2)`` int64, on that device."""
    if tensors and tensors[0].device.type != "cpu":
        return device_fingerprints(tensors)
    return torch.tensor([cpu_digest(t) for t in tensors], dtype=torch.int64).reshape(-1, 2)


def cpu_digest(tensor: torch.Tensor) -> tuple[int, int]:
    """XXH3-128 of a CPU tensor's bytes, as two signed 64-bit numbers."""
    raw = memoryview(_bits(tensor).contiguous().numpy()).cast("B")
    digest = xxhash.xxh3_128_intdigest(raw)
    return _signed(digest & _MASK64), _signed(digest >> 64)


def device_fingerprints(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    """The accelerator hash (see the module docstring) of tensors on one device.

    It runs on any device, the CPU included (that is how it is tested); the CPU path of
    :func:`fingerprints` uses XXH3 instead because it is faster there.
    """
    device = tensors[0].device
    # (row of the tensor, offset of the piece in the tensor, the piece's words)
    pieces: list[tuple[int, int, torch.Tensor]] = []
    for row, tensor in enumerate(tensors):
        words = _words(tensor)
        pieces += [(row, start, words[start:start + _CHUNK])
                   for start in range(0, words.numel(), _CHUNK)]
    sums = torch.zeros(len(_MIXERS), len(tensors), dtype=torch.int64, device=device)
    bucket: list[tuple[int, int, torch.Tensor]] = []
    size = 0
    for piece in [*pieces, None]:
        if piece is not None and size + piece[2].numel() <= _CHUNK:
            bucket.append(piece)
            size += piece[2].numel()
            continue
        if bucket:
            _add_bucket(sums, bucket, size, device)
        bucket, size = ([piece], piece[2].numel()) if piece is not None else ([], 0)
    return sums.t().contiguous()


def _add_bucket(sums: torch.Tensor, bucket: list[tuple[int, int, torch.Tensor]], size: int,
                device: torch.device) -> None:
    """Add the mixed keys of one bucket's words to their tensors' sums (in place).

    Pieces are consecutive ranges of the bucket, so each piece's sum is read off one prefix sum
    (no atomics, deterministic); only the few piece sums are then added to their rows.
    """
    lengths = [words.numel() for *_, words in bucket]
    ends = list(accumulate(lengths))
    shift = [offset - (end - length) for (_, offset, _), end, length in zip(bucket, ends, lengths)]
    words = torch.cat([w.to(torch.int64) for *_, w in bucket]) & _LOW32
    # Position of each word in its own tensor: its place in the bucket, moved by the piece offset.
    position = torch.arange(size, device=device) + torch.repeat_interleave(
        torch.tensor(shift, device=device), torch.tensor(lengths, device=device),
        output_size=size)
    keys = (position << 32) | words
    mixed = torch.stack([_mix(keys + _signed(seed), shifts, multipliers)
                         for seed, shifts, multipliers in _MIXERS])
    at_end = mixed.cumsum(1)[:, torch.tensor(ends, device=device) - 1]
    pieces = at_end - torch.nn.functional.pad(at_end[:, :-1], (1, 0))
    sums.index_add_(1, torch.tensor([row for row, _, _ in bucket], device=device), pieces)


def _mix(x: torch.Tensor, shifts: tuple[int, int, int], multipliers: tuple[int, int]) -> torch.Tensor:
    """A bijective 64-bit finaliser on int64 (wrapping multiplies, logical right shifts)."""
    for shift, multiplier in zip(shifts, (*multipliers, None)):
        x = x ^ ((x >> shift) & ((1 << (64 - shift)) - 1))
        if multiplier is not None:
            x = x * _signed(multiplier)
    return x


def _words(tensor: torch.Tensor) -> torch.Tensor:
    """The bytes of ``tensor`` as a flat integer vector: 32-bit words, or one word per element
    for 1- and 2-byte elements (a view, no copy when contiguous)."""
    bits = _bits(tensor)
    if bits.element_size() == 8:
        return bits.view(torch.int32)
    return bits


def _bits(tensor: torch.Tensor) -> torch.Tensor:
    """The elements of ``tensor`` as same-width integers, flat (a view when contiguous)."""
    data = tensor.detach()
    if data.is_complex():
        data = torch.view_as_real(data.resolve_conj())
    if not data.is_floating_point() and data.dtype in _INT_OF_SIZE.values():
        return data.reshape(-1)
    return data.reshape(-1).view(_INT_OF_SIZE[data.element_size()])


def _signed(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value
