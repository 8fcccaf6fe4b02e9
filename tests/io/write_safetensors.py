#!/usr/bin/env python3
"""An independent safetensors writer for the io tests: the standard library only (struct,
json), following the format's specification, not this library's code.

Usage: write_safetensors.py OUT_DIR

Writes into OUT_DIR:
  model.safetensors     two layers' state as PyTorch names them: a BatchNorm's weight (F32),
                        bias (F64), running_mean (F16, with a subnormal, 65504 and -0.0),
                        running_var (BF16), num_batches_tracked (I64, 0-dimensional), and a
                        convolution's weight (I8) and a mask (BOOL); metadata {"format": "pt"}.
                        The header is not padded (the data section starts at an odd offset)
                        and the tensors are laid out in neither name nor size order.
  expected.json         each tensor of model.safetensors decoded here: dtype, shape, and the
                        values as numbers (F16 / BF16 decoded by struct / bit shifts), metadata
  halves.safetensors    "f16" and "bf16": every 16-bit pattern 0..65535 (F16, BF16 [65536]);
  halves.json           {"f16": [...], "bf16": [...]}: each pattern's value as the bits of a
                        float32 (struct's decoding), null for a NaN
  bad/<name>.safetensors  files a reader must refuse, and bad.json: {name: a phrase its error
                        message must contain}
"""
import json
import os
import struct
import sys


def f16_bits(values):
    return [struct.unpack("<H", struct.pack("<e", v))[0] for v in values]


def bf16_bits(values):
    # The top 16 bits of the float32 (values chosen so that the low 16 are zero: exact).
    out = []
    for v in values:
        bits = struct.unpack("<I", struct.pack("<f", v))[0]
        assert bits & 0xFFFF == 0, v
        out.append(bits >> 16)
    return out


def decode(dtype, raw, count):
    if dtype == "F32":
        return list(struct.unpack("<%df" % count, raw))
    if dtype == "F64":
        return list(struct.unpack("<%dd" % count, raw))
    if dtype == "F16":
        return list(struct.unpack("<%de" % count, raw))
    if dtype == "BF16":
        halves = struct.unpack("<%dH" % count, raw)
        return [struct.unpack("<f", struct.pack("<I", h << 16))[0] for h in halves]
    if dtype == "I64":
        return list(struct.unpack("<%dq" % count, raw))
    if dtype == "I8":
        return list(struct.unpack("<%db" % count, raw))
    if dtype == "BOOL":
        return [int(b) for b in raw]
    raise ValueError(dtype)


def tensors():
    """(name, dtype, shape, raw bytes), in the order they are laid out in the file."""
    weight = [0.5, -1.25, 3.0e-8]
    bias = [0.1, -2.0 / 3.0, 1.0e300]
    mean = [2.0 ** -24, 65504.0, -0.0]  # a half subnormal, the largest half, negative zero
    var = [1.5, 0.0078125, 3.0e38]
    var = [struct.unpack("<f", struct.pack("<I", struct.unpack("<I", struct.pack("<f", v))[0] & 0xFFFF0000))[0]
           for v in var]
    return [
        ("layer2.mask", "BOOL", [2, 3], bytes([1, 0, 0, 1, 1, 0])),
        ("layer1.bn.running_var", "BF16", [3], struct.pack("<3H", *bf16_bits(var))),
        ("layer1.bn.weight", "F32", [3], struct.pack("<3f", *weight)),
        ("layer1.bn.num_batches_tracked", "I64", [], struct.pack("<q", 1234567890123)),
        ("layer1.bn.running_mean", "F16", [3], struct.pack("<3H", *f16_bits(mean))),
        ("layer2.conv.weight", "I8", [2, 1, 1, 2], struct.pack("<4b", -128, -1, 0, 127)),
        ("layer1.bn.bias", "F64", [3], struct.pack("<3d", *bias)),
    ]


def file_bytes(entries, metadata=None, pad=False, offsets=None, header_override=None):
    header = {}
    if metadata is not None:
        header["__metadata__"] = metadata
    at = 0
    for i, (name, dtype, shape, raw) in enumerate(entries):
        begin, end = (at, at + len(raw)) if offsets is None else offsets[i]
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [begin, end]}
        at += len(raw)
    text = json.dumps(header).encode("utf-8") if header_override is None else header_override
    if pad:
        text += b" " * ((8 - len(text) % 8) % 8)
    return struct.pack("<Q", len(text)) + text + b"".join(raw for _, _, _, raw in entries)


def main():
    out = sys.argv[1]
    os.makedirs(os.path.join(out, "bad"), exist_ok=True)
    entries = tensors()
    data = file_bytes(entries, metadata={"format": "pt", "note": "written by write_safetensors.py"})
    header_len = struct.unpack("<Q", data[:8])[0]
    assert (8 + header_len) % 2 == 1, "the data section should start at an odd offset"
    with open(os.path.join(out, "model.safetensors"), "wb") as f:
        f.write(data)
    expected = {"metadata": {"format": "pt", "note": "written by write_safetensors.py"}, "tensors": {}}
    for name, dtype, shape, raw in entries:
        count = 1
        for d in shape:
            count *= d
        values = decode(dtype, raw, count)
        # JSON has no -0.0 distinction for integers; floats keep their sign in the "signbit" list.
        expected["tensors"][name] = {"dtype": dtype, "shape": shape, "values": values,
                                     "signbit": [1 if str(v).startswith("-") else 0 for v in values]}
    with open(os.path.join(out, "expected.json"), "w") as f:
        json.dump(expected, f, indent=1)

    every = struct.pack("<65536H", *range(65536))
    with open(os.path.join(out, "halves.safetensors"), "wb") as f:
        f.write(file_bytes([("f16", "F16", [65536], every), ("bf16", "BF16", [65536], every)], pad=True))
    halves = {"f16": [], "bf16": []}
    for h in range(65536):
        for key, value in (("f16", struct.unpack("<e", struct.pack("<H", h))[0]),
                           ("bf16", struct.unpack("<f", struct.pack("<I", h << 16))[0])):
            halves[key].append(None if value != value else struct.unpack("<I", struct.pack("<f", value))[0])
    with open(os.path.join(out, "halves.json"), "w") as f:
        json.dump(halves, f)

    small = [("a", "F32", [2], struct.pack("<2f", 1.0, 2.0)), ("b", "I64", [], struct.pack("<q", 7))]
    good = file_bytes(small, pad=True)
    bad = {}

    def put(name, raw, phrase):
        with open(os.path.join(out, "bad", name + ".safetensors"), "wb") as f:
            f.write(raw)
        bad[name] = phrase

    put("empty", b"", "shorter than the 8-byte header length")
    put("truncated_length", good[:5], "shorter than the 8-byte header length")
    put("truncated_header", good[:20], "runs past the end of the file")
    put("truncated_data", good[:-3], "past the data section")
    put("trailing_bytes", good + b"\0" * 8, "the tensors end at byte")
    put("oversized_header", struct.pack("<Q", 100_000_001) + b"{}", "over the limit")
    put("huge_length", struct.pack("<Q", 2 ** 64 - 1) + b"{}", "over the limit")
    put("not_an_object", file_bytes([], header_override=b"[1, 2]"), "does not start with '{'")
    put("not_json", file_bytes([], header_override=b"{\"a\": }"), "not valid UTF-8 JSON")
    put("not_utf8", file_bytes([], header_override=b"{\"\xff\xfe\": {}}"), "not valid UTF-8 JSON")
    put("overlong_utf8", file_bytes([], header_override=b"{\"\xc0\xaf\": {}}"), "not valid UTF-8 JSON")
    put("overlap", file_bytes(small[:1] + [("b", "F32", [1], struct.pack("<f", 3.0))], offsets=[(0, 8), (4, 8)]),
        "overlaps")
    put("gap", file_bytes(small[:1] + [("b", "F32", [1], struct.pack("<f", 3.0))], offsets=[(0, 8), (12, 16)]),
        "past the data section")
    put("gap_inside", file_bytes(small[:1] + [("b", "F32", [1], struct.pack("<f", 3.0) * 2)], offsets=[(0, 8), (12, 16)]),
        "a gap before it")
    put("length_mismatch", file_bytes([("a", "F32", [3], struct.pack("<2f", 1.0, 2.0))]), "need 12")
    put("backwards", file_bytes([("a", "F32", [0], b"")], offsets=[(4, 0)]), "run backwards")
    put("unknown_dtype", file_bytes([("a", "F128", [1], b"\0" * 16)]), "unknown dtype")
    put("negative_shape", file_bytes([("a", "F32", [-1], b"")]), "non-negative integer")
    put("float_shape", file_bytes([], header_override=b'{"a": {"dtype": "F32", "shape": [1.0], "data_offsets": [0, 4]}}')
        + b"\0" * 4, "non-negative integer")
    put("shape_overflow", file_bytes([("a", "F64", [2 ** 62, 4], b"")]), "overflows")
    put("missing_offsets", file_bytes([], header_override=b'{"a": {"dtype": "F32", "shape": [1]}}'),
        "needs dtype, shape and data_offsets")
    put("duplicate_key", file_bytes([], header_override=b'{"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},'
                                                         b' "a": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}')
        + b"\0" * 8, "appears twice")
    put("metadata_not_string", file_bytes([], metadata={"epoch": 3}), "must be a string")
    put("deep_nesting", file_bytes([], header_override=b'{"a": ' + b"[" * 100000 + b"]" * 100000 + b"}"), "deeper than")
    put("nul_byte", file_bytes([], header_override=b"{}\0not json"), "NUL byte")
    put("nested_shape", file_bytes([], header_override=b'{"a": {"dtype": "F32", "shape": [[1]], "data_offsets": [0, 4]}}')
        + b"\0" * 4, "deeper than")
    with open(os.path.join(out, "bad.json"), "w") as f:
        json.dump(bad, f, indent=1)


if __name__ == "__main__":
    main()
