"""Sign binarisation of hash codes and packing of codes into uint32 words.

Packed layout: bit j of a K-bit code is stored in word j // 32 at bit position j % 32,
counting from the least significant bit. A set bit means +1 (or 1, or True) and a clear
bit means -1 (or 0, or False). Padding bits after bit K - 1 in the last word are zero,
so they never add to a Hamming distance.
"""

from __future__ import annotations

import operator

import jax
import jax.numpy as jnp
import numpy as np

WORD_BITS = 32


def num_words(bits: int) -> int:
    """Return the number of uint32 words that hold a code of `bits` bits."""
    return -(-bits // WORD_BITS)


def binarize(x):
    """Binarise real-valued codes by sign, with sign(0) = +1, into int8 values in {-1, +1}.

    Returns a jax.Array for jax input (this also works inside jit) and a numpy array for
    any other input. The input is never modified. Because +0.0 and -0.0 compare equal
    to 0, both map to +1.

    Raises ValueError for bool or complex input and for numpy input containing NaN.
    NOTE: NaN in jax input maps to -1, because values cannot be checked inside jit.
    """
    if isinstance(x, jax.Array):
        _check_real_dtype(x.dtype, "x")
        return jnp.where(x >= 0, 1, -1).astype(jnp.int8)

    x = np.asarray(x)
    _check_real_dtype(x.dtype, "x")
    if np.issubdtype(x.dtype, np.floating) and np.isnan(x).any():
        raise ValueError("x contains NaN, but binarize expects finite real-valued codes")
    return np.where(x >= 0, 1, -1).astype(np.int8)


def pack_codes(codes) -> np.ndarray:
    """Pack an N x K array of codes into a uint32 array of shape [N, ceil(K / 32)].

    `codes` contains values in {-1, +1}, in {0, 1}, or bools. A numpy or jax array is
    accepted and the result is always numpy. Raises ValueError for a non-2-D array,
    K = 0, or values outside the allowed sets.
    """
    bits = _codes_as_bits(codes, "codes")
    num_codes, code_bits = bits.shape
    width = num_words(code_bits) * WORD_BITS

    padded = np.zeros((num_codes, width), dtype=np.bool_)
    padded[:, :code_bits] = bits
    # With bitorder="little", bit i of byte b is code bit 8 * b + i. Reading each group
    # of four bytes as a little-endian uint32 then puts code bit j at bit j % 32 of word
    # j // 32, on any host byte order.
    packed_bytes = np.packbits(padded, axis=1, bitorder="little")
    return packed_bytes.view("<u4").astype(np.uint32)


def pack_codes_jax(codes: jax.Array) -> jax.Array:
    """Pack an N x K array of codes into uint32 words with jax.numpy, for use inside jit.

    The words are identical to those of `pack_codes`. A value > 0 (+1, 1 or True) sets
    its bit and any other value leaves it clear. Unlike `pack_codes`, this function
    cannot check values, because they are unknown while jit traces. Raises ValueError
    for a non-2-D array or K = 0.
    """
    codes = jnp.asarray(codes)
    if codes.ndim != 2:
        raise ValueError(f"codes must be a 2-D array [N, K], got shape {codes.shape}")
    num_codes, code_bits = codes.shape
    if code_bits == 0:
        raise ValueError("codes must have at least one bit per code (K >= 1), got K = 0")

    words = num_words(code_bits)
    bits = codes > 0
    bits = jnp.pad(bits, ((0, 0), (0, words * WORD_BITS - code_bits)))
    bits = bits.reshape(num_codes, words, WORD_BITS)

    bit_values = jnp.left_shift(jnp.uint32(1), jnp.arange(WORD_BITS, dtype=jnp.uint32))
    word_terms = jnp.where(bits, bit_values, jnp.uint32(0))
    # Each term is a distinct power of two, so the sum equals the bitwise OR and cannot overflow.
    return jnp.sum(word_terms, axis=-1, dtype=jnp.uint32)


def unpack_codes(packed, bits: int) -> np.ndarray:
    """Unpack uint32 words from `pack_codes` into an int8 array [N, bits] of {-1, +1}.

    Raises ValueError if `packed` is not a 2-D uint32 array, if `bits` <= 0, if `bits`
    is larger than the packed width or needs fewer words than `packed` has, or if a
    padding bit after bit `bits` - 1 is set.
    """
    packed = np.asarray(packed)
    check_packed(packed, "packed")
    bits = operator.index(bits)
    words = packed.shape[1]
    if bits <= 0:
        raise ValueError(f"bits must be >= 1, got {bits}")
    if bits > words * WORD_BITS:
        raise ValueError(
            f"bits = {bits} is larger than the packed width of {words} words "
            f"({words * WORD_BITS} bits). Pass the code length used when packing."
        )
    if num_words(bits) != words:
        raise ValueError(
            f"packed has {words} words per code, but {bits}-bit codes use "
            f"{num_words(bits)}. Pass the code length used when packing."
        )

    packed_bytes = np.ascontiguousarray(packed, dtype="<u4").view(np.uint8)
    unpacked = np.unpackbits(packed_bytes, axis=1, bitorder="little")
    if unpacked[:, bits:].any():
        raise ValueError(
            f"packed has set bits after bit {bits - 1}. Pass the code length used when packing."
        )
    return np.where(unpacked[:, :bits], 1, -1).astype(np.int8)


def check_packed(packed, name: str) -> None:
    """Raise ValueError unless `packed` is a 2-D uint32 array with at least one word per code.

    Works on numpy arrays, jax arrays and jit tracers, because it reads only shape and dtype.
    """
    if packed.ndim != 2:
        raise ValueError(
            f"{name} must be a 2-D uint32 array [N, words] from pack_codes, got shape {packed.shape}"
        )
    if packed.dtype != np.uint32:
        raise ValueError(
            f"{name} must have dtype uint32 (packed codes from pack_codes), got {packed.dtype}"
        )
    if packed.shape[1] == 0:
        raise ValueError(f"{name} must have at least one word per code, got shape {packed.shape}")


def check_packed_pair(query_packed, database_packed) -> None:
    """Check both packed arrays and that their codes have the same number of words."""
    check_packed(query_packed, "query_packed")
    check_packed(database_packed, "database_packed")
    if query_packed.shape[1] != database_packed.shape[1]:
        raise ValueError(
            f"query_packed has {query_packed.shape[1]} words per code but database_packed "
            f"has {database_packed.shape[1]}. Pack both with the same code length."
        )


def _check_real_dtype(dtype, name: str) -> None:
    if not (np.issubdtype(dtype, np.integer) or np.issubdtype(dtype, np.floating)):
        raise ValueError(f"{name} must have an integer or floating dtype, got {dtype}")


def _codes_as_bits(codes, name: str) -> np.ndarray:
    """Validate codes in {-1, +1}, {0, 1} or bool and return a bool array that is True for +1 or 1."""
    codes = np.asarray(codes)
    if codes.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array [N, K], got shape {codes.shape}")
    if codes.shape[1] == 0:
        raise ValueError(f"{name} must have at least one bit per code (K >= 1), got K = 0")
    if codes.dtype == np.bool_:
        return codes
    _check_real_dtype(codes.dtype, name)

    is_one = codes == 1
    is_minus_one = codes == -1
    is_zero = codes == 0
    if not np.all(is_one | is_minus_one | is_zero):
        invalid = codes[~(is_one | is_minus_one | is_zero)]
        raise ValueError(
            f"{name} must contain only -1/+1, only 0/1, or bools, but contains {invalid[0]!r}"
        )
    if is_minus_one.any() and is_zero.any():
        raise ValueError(
            f"{name} mixes -1 and 0. Use -1/+1 codes (for example from binarize) or 0/1 bits."
        )
    return is_one
