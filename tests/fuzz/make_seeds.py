#!/usr/bin/env python3
"""Writes the seed corpus of fuzz_batch_norm into tests/fuzz/corpus/ (python3 make_seeds.py).

The byte format is the one documented at the top of fuzz_batch_norm.cpp (ByteReader: front to
back, little-endian). Each seed is one small, readable case: a module, a layout, options, and a
short call sequence, covering every rank and layout, channels-last, the value classes and the
error paths. Deterministic: rerunning rewrites the same files.
"""
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "corpus")

# config bits
DOUBLE, COLMAJOR, CHANNELS_LAST, AFFINE_OFF, TRACK_OFF, MOMENTUM_NONE = 1, 8, 16, 32, 64, 128
MODULE = {"1d_nc": 0, "1d_ncl": 1, "2d": 2, "3d": 3}
RANK = {"1d_nc": 2, "1d_ncl": 3, "2d": 4, "3d": 5}
# index into kEps / kMomentum
EPS = {1e-5: 0, 1e-3: 1, 0.1: 2, 1.0: 3, 1e-300: 4, 1e-45: 5, 0.0: 6, -1e-5: 7, "nan": 8, "inf": 9}
MOM = {0.1: 0, 0.0: 1, 1.0: 2, 0.5: 3, 0.9: 4, -0.1: 5, 1.5: 6, "nan": 7}
# kDims = {0, 1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 17, 1, 2, 3, 33}
DIM_INDEX = {0: 0, 1: 1, 2: 2, 3: 3, 4: 4, 5: 5, 7: 6, 8: 7, 9: 8, 15: 9, 16: 10, 17: 11, 33: 15}
# value classes
NORMAL, LARGE_MEAN, CONSTANT, NEAR_MAX, DENORMAL, RAW, MIXED, INTEGERS, SCALED = range(9)
# special kinds
NAN, PINF, NINF, DENORM, NDENORM, MAX, NMAX, ZERO, NZERO, E30, NE30, MINNORM = range(12)
# ops
TRAIN, EVAL, BACKWARD, WRONG_C, WRONG_Y, WRONG_BW, INPLACE = 0, 2, 3, 4, 5, 6, 7


def dim(d):
    if d in DIM_INDEX:
        return bytes([DIM_INDEX[d]])
    assert 1000 <= d <= 2100
    return bytes([224]) + struct.pack("<H", d - 1000)


def spec(cls=NORMAL, seed=1, e=0, r=0, raw=(), double=False, specials=()):
    b = bytes([cls]) + struct.pack("<I", seed)
    if cls == LARGE_MEAN:
        b += bytes([e, r - 1])
    elif cls == SCALED:
        raise NotImplementedError  # exponent offset depends on T; not needed for seeds
    elif cls == RAW:
        b += bytes([len(raw) - 1])
        b += b"".join(struct.pack("<d" if double else "<f", v) for v in raw)
    b += bytes([len(specials)])
    for pos, kind in specials:
        b += struct.pack("<I", pos) + bytes([kind])
    return b


def case(module, dims, *, double=False, colmajor=False, channels_last=False, affine=True, track=True,
         momentum=0.1, eps=1e-5, init=b"\x00", calls=()):
    cfg = MODULE[module] << 1
    cfg |= DOUBLE if double else 0
    cfg |= COLMAJOR if colmajor else 0
    cfg |= CHANNELS_LAST if channels_last else 0
    cfg |= 0 if affine else AFFINE_OFF
    cfg |= 0 if track else TRACK_OFF
    cfg |= MOMENTUM_NONE if momentum is None else 0
    assert len(dims) == RANK[module]
    b = bytes([cfg, EPS[eps], MOM[0.1 if momentum is None else momentum]])
    b += b"".join(dim(d) for d in dims)
    b += init
    b += bytes([len(calls) - 1])
    for c in calls:
        b += c
    return b


def forward(op, value_spec, *, train_mode=True, new_dims=None, misaligned=False):
    """A forward-like call (TRAIN, EVAL, INPLACE, WRONG_C, WRONG_Y); new_dims: the non-channel dims."""
    flags = (0 if train_mode else 2) | (1 if new_dims else 0)
    b = bytes([op, flags])
    if new_dims:
        b += b"".join(dim(d) for d in new_dims)
    return b + bytes([1 if misaligned else 0]) + value_spec


def backward(value_spec, inplace=False):
    return bytes([BACKWARD, 4 if inplace else 0, 0]) + value_spec


def wrong_backward(which):  # 0: x, 1: dy, 2: dx of another shape
    return bytes([WRONG_BW, which << 4])


def seeds():
    s = {}
    n = spec(NORMAL, 1)
    s["1d_nc_train_backward_eval"] = case("1d_nc", [8, 4], calls=[forward(TRAIN, n), backward(spec(NORMAL, 2)),
                                                                    forward(EVAL, spec(NORMAL, 3))])
    s["1d_ncl_colmajor_channels_last"] = case("1d_ncl", [4, 5, 3], colmajor=True, channels_last=True,
                                              calls=[forward(TRAIN, n), backward(spec(NORMAL, 4), inplace=True)])
    s["2d_rowmajor_simd_tails"] = case("2d", [3, 5, 7, 9], calls=[forward(TRAIN, n), backward(spec(NORMAL, 5)),
                                                                   forward(TRAIN, n, new_dims=[17, 15, 16],
                                                                           misaligned=True)])
    s["2d_colmajor_channels_last_double"] = case("2d", [2, 4, 4, 16], double=True, colmajor=True, channels_last=True,
                                                 calls=[forward(TRAIN, n), forward(EVAL, n, new_dims=[1, 4, 4]),
                                                        backward(spec(NORMAL, 6))])
    s["3d_double_momentum_none"] = case("3d", [2, 3, 2, 3, 4], double=True, momentum=None,
                                        calls=[forward(TRAIN, n), forward(TRAIN, spec(NORMAL, 7)),
                                               forward(EVAL, n), backward(spec(NORMAL, 8))])
    s["3d_channels_last_colmajor_affine_off"] = case("3d", [2, 2, 3, 2, 5], colmajor=True, channels_last=True,
                                                     affine=False, calls=[forward(TRAIN, n), backward(n)])
    s["2d_long_rows"] = case("2d", [2, 3, 1, 1500], calls=[forward(TRAIN, n), backward(spec(NORMAL, 9))])
    s["1d_nc_long_channels_last_lanes"] = case("1d_nc", [17, 1033], calls=[forward(TRAIN, n), backward(n)])
    s["2d_large_mean_1e4_float"] = case("2d", [4, 3, 4, 4], calls=[forward(TRAIN, spec(LARGE_MEAN, 2, e=4, r=5)),
                                                                   backward(n), forward(EVAL, n)])
    s["2d_large_mean_1e30_constant_float"] = case("2d", [4, 2, 3, 3], calls=[
        forward(TRAIN, spec(LARGE_MEAN, 2, e=30, r=20)), backward(n)])
    s["1d_nc_raw_1e30_double"] = case("1d_nc", [4, 1], double=True, calls=[
        forward(TRAIN, spec(RAW, raw=(1e30, -1e30, 2e30, -2e30), double=True)), backward(n)])
    s["1d_nc_near_max_double"] = case("1d_nc", [8, 3], double=True, momentum=1.0,
                                      calls=[forward(TRAIN, spec(NEAR_MAX, 3)), forward(EVAL, n)])
    s["2d_constant_channels"] = case("2d", [3, 4, 2, 5], calls=[forward(TRAIN, spec(CONSTANT, 4)), backward(n)])
    s["2d_double_constant_channels_colmajor"] = case("2d", [3, 4, 2, 5], double=True, colmajor=True,
                                                     calls=[forward(TRAIN, spec(CONSTANT, 5)), backward(n)])
    s["2d_nan_in_one_channel"] = case("2d", [2, 4, 3, 3], calls=[
        forward(TRAIN, spec(NORMAL, 6, specials=[(5, NAN)])), backward(spec(NORMAL, 7, specials=[(30, NAN)]))])
    s["1d_ncl_inf_and_denormals"] = case("1d_ncl", [3, 5, 4], calls=[
        forward(TRAIN, spec(DENORMAL, 8, specials=[(7, PINF), (40, DENORM)])), forward(EVAL, spec(DENORMAL, 9))])
    s["2d_mixed_classes_double"] = case("2d", [4, 9, 2, 2], double=True, calls=[forward(TRAIN, spec(MIXED, 10)),
                                                                              backward(spec(MIXED, 11))])
    s["1d_nc_integers_two_values"] = case("1d_nc", [2, 5], calls=[forward(TRAIN, spec(INTEGERS, 12)), backward(n)])
    s["2d_no_track_eval"] = case("2d", [3, 3, 4, 4], track=False, calls=[
        forward(TRAIN, n), forward(EVAL, n), backward(spec(NORMAL, 13))])
    s["2d_inplace_forward"] = case("2d", [2, 3, 4, 5], calls=[forward(INPLACE, n), backward(n, inplace=True),
                                                              forward(INPLACE, n, train_mode=False)])
    s["err_backward_before_forward"] = case("2d", [2, 3, 2, 2], calls=[bytes([BACKWARD, 0, 0]) + n,
                                                                      wrong_backward(0), forward(TRAIN, n)])
    s["err_wrong_channels_and_output"] = case("1d_ncl", [2, 4, 3], calls=[
        forward(TRAIN, n), forward(WRONG_C, n), forward(WRONG_Y, n, train_mode=False), wrong_backward(1),
        wrong_backward(2), backward(n)])
    s["err_one_value_per_channel"] = case("2d", [1, 3, 1, 1], calls=[forward(TRAIN, n), forward(EVAL, n)])
    s["err_one_value_no_track_eval"] = case("1d_nc", [1, 4], track=False, calls=[forward(EVAL, n)])
    s["err_empty_batch"] = case("2d", [0, 3, 2, 2], momentum=None, calls=[forward(TRAIN, n), backward(n),
                                                                          forward(EVAL, n)])
    s["err_invalid_eps"] = case("2d", [2, 3, 2, 2], eps=-1e-5, calls=[forward(TRAIN, n)])
    s["err_invalid_momentum"] = case("1d_nc", [4, 3], momentum=1.5, calls=[forward(TRAIN, n)])
    s["err_zero_channels"] = case("1d_ncl", [2, 0, 3], calls=[forward(TRAIN, n)])
    s["2d_init_state_eval_backward"] = case("2d", [2, 3, 3, 3], init=bytes([1 | 2 | (5 << 2)]) + spec(NORMAL, 20) +
                                            spec(NORMAL, 21) + spec(NORMAL, 22) + spec(NORMAL, 23), momentum=None,
                                            calls=[forward(EVAL, n), backward(spec(NORMAL, 24)), forward(TRAIN, n)])
    return s


def fixed_bugs():
    """Reproducers of the library, oracle and harness bugs the fuzzer found (float statistics
    beyond float's range, tiny spreads, terms that cancel, eval backward in place, an empty batch
    with huge extents); fixed, so they are seeds now. A reproducer of an open bug must not be a
    seed (a seed that fails stops every smoke run at once): keep such ones in a separate folder."""
    s = {}
    n = spec(NORMAL, 1)
    s["float_partial_squares_overflow"] = case("1d_nc", [4, 1], calls=[
        forward(TRAIN, spec(RAW, raw=(1e30, -1e30, 2e30, -2e30)))])
    s["float_large_mean_1e30"] = case("2d", [4, 2, 3, 3], calls=[forward(TRAIN, spec(LARGE_MEAN, 2, e=30, r=3))])
    s["float_near_max_y_nan"] = case("1d_nc", [8, 3], momentum=1.0, calls=[forward(TRAIN, spec(NEAR_MAX, 3))])
    s["float_tiny_spread_eps1e-300"] = case("1d_nc", [2, 1], eps=1e-300, calls=[
        forward(TRAIN, spec(RAW, raw=(1e-25, 0.0))), backward(n)])
    # The fuzzer's own input (kept as found): an empty training batch, then an eval forward of
    # 1012 channels whose weight * xhat and bias cancel (the oracle's elementwise rounding term).
    s["float_eval_weight_bias_cancel"] = bytes.fromhex(
        "00000000ff0c001d1d1d1d1dff0c1d1d1d1d1d1d1d1d1d1d2301000000000000007ffeffffffffffffffffffffffffff0000")
    # The fuzzer's own input: an eval forward of values near float's maximum (an Inf in channel 0,
    # NaN in channel 2), then backward in place (dx into dy): float gradient sums that overflow
    # are taken again in double, which must read dy before dx overwrites it.
    s["float_eval_backward_in_place_resum"] = bytes.fromhex(
        "040000020304050002ffffffffffffffffffffffffffffffffffffffffff070103000100009117910000030400000100000000070200a80100000000")
    # The fuzzer's own input (the harness's bug, a 105 s unit): an empty ColMajor batch of shape
    # (0, 1958, 1576, 1576, 1), whose reference loops ran 4.9e9 (outer, channel) steps; cap_size now
    # counts empty dimensions as 1.
    s["double_empty_batch_huge_extents"] = bytes.fromhex("eff43f00eff43fffffffffffff013b")
    return s


def write(directory, cases):
    os.makedirs(directory, exist_ok=True)
    for name, data in sorted(cases.items()):
        with open(os.path.join(directory, name), "wb") as f:
            f.write(data)
    print(f"wrote {len(cases)} files to {directory}")


def main():
    write(OUT, {**seeds(), **fixed_bugs()})


if __name__ == "__main__":
    main()
