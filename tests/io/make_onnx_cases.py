#!/usr/bin/env python3
"""Writes tests/data/onnx_batchnorm.safetensors from the ONNX operator tests Debian ships
(package libonnx-testdata: BatchNormalization, inference and training mode), for io_test.cpp.
Needs python3-onnx and libonnx-testdata; run by hand, its output is committed:

    python3 tests/io/make_onnx_cases.py tests/data/onnx_batchnorm.safetensors

For each case <name> (test_batchnorm_example, ..._training_mode, test_batchnorm_epsilon, ...):
tensors <name>.x, .scale, .bias, .input_mean, .input_var (the inputs), <name>.y and, in
training mode, <name>.running_mean and <name>.running_var (the outputs), all F32 as ONNX gives
them; metadata "<name>.epsilon", "<name>.momentum" (ONNX's: weight of the OLD value) and
"<name>.training_mode" as strings (repr: the exact float32 attribute value as a decimal).
"""
import glob
import os
import struct
import sys

import onnx
from onnx import numpy_helper

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from write_safetensors import file_bytes  # noqa: E402

ROOT = "/usr/share/libonnx-testdata/data/node"
INPUTS = ["x", "scale", "bias", "input_mean", "input_var"]
OUTPUTS = ["y", "running_mean", "running_var"]


def read_pb(path):
    t = onnx.TensorProto()
    with open(path, "rb") as f:
        t.ParseFromString(f.read())
    return numpy_helper.to_array(t)


def entry(name, a):
    assert a.dtype.name == "float32", a.dtype
    values = a.flatten().tolist()
    return (name, "F32", list(a.shape), struct.pack("<%df" % len(values), *values))


def main():
    entries, metadata = [], {"written_by": "tests/io/make_onnx_cases.py", "onnx": onnx.__version__}
    for case_dir in sorted(glob.glob(os.path.join(ROOT, "test_batchnorm_*"))):
        name = os.path.basename(case_dir)
        node = onnx.load(os.path.join(case_dir, "model.onnx")).graph.node[0]
        assert node.op_type == "BatchNormalization"
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        metadata[name + ".epsilon"] = repr(attrs.get("epsilon", 1e-5))
        metadata[name + ".momentum"] = repr(attrs.get("momentum", 0.9))
        metadata[name + ".training_mode"] = str(attrs.get("training_mode", 0))
        data = os.path.join(case_dir, "test_data_set_0")
        for i, role in enumerate(INPUTS):
            entries.append(entry(name + "." + role, read_pb(os.path.join(data, "input_%d.pb" % i))))
        outputs = sorted(glob.glob(os.path.join(data, "output_*.pb")))
        for i, path in enumerate(outputs):
            entries.append(entry(name + "." + OUTPUTS[i], read_pb(path)))
    with open(sys.argv[1], "wb") as f:
        f.write(file_bytes(entries, metadata=metadata, pad=True))


if __name__ == "__main__":
    main()
