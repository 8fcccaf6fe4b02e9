#!/usr/bin/env python3
"""Writes tests/data/pytorch_bn2d.safetensors: a torch.nn.BatchNorm2d's trained state as
PyTorch 1.13 keeps it, and an eval input with PyTorch's outputs, for io_test.cpp. Needs
python3-torch (1.13); run by hand, its output is committed (the tests do not need torch):

    python3 tests/io/make_pytorch_state.py tests/data/pytorch_bn2d.safetensors

Tensors (safetensors written by write_safetensors.py's file_bytes, the standard library only):
  bn.weight, bn.bias, bn.running_mean, bn.running_var   F32 [4]   after 3 training steps
  bn.num_batches_tracked                                 I64 []
  bf16.bn.*          the same state after module.to(torch.bfloat16) (BF16; the counter stays I64)
  bf16_as_f32.bn.*   those BF16 values widened by torch (.float()), F32
  eval.input         F32 [2, 4, 3, 3]
  eval.output        F32: the float32 module in eval mode on eval.input
  eval.output_f64    F64: the same state in float64 (module.double()), the sharper reference
"""
import os
import struct
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from write_safetensors import file_bytes  # noqa: E402

FORMATS = {torch.float32: ("F32", "f"), torch.float64: ("F64", "d"), torch.int64: ("I64", "q")}


def entry(name, t):
    t = t.detach().contiguous()
    if t.dtype == torch.bfloat16:
        bits = t.view(torch.int16).flatten().tolist()
        return (name, "BF16", list(t.shape), struct.pack("<%dh" % len(bits), *bits))
    dtype, code = FORMATS[t.dtype]
    values = t.flatten().tolist()
    return (name, dtype, list(t.shape), struct.pack("<%d%s" % (len(values), code), *values))


def main():
    torch.manual_seed(2026)
    torch.set_num_threads(1)
    bn = torch.nn.BatchNorm2d(4)
    with torch.no_grad():
        bn.weight.copy_(torch.tensor([0.5, 1.5, -2.0, 1.0]))
        bn.bias.copy_(torch.tensor([0.0, -1.0, 0.25, 3.0]))
    bn.train()
    for step in range(3):
        x = torch.randn(5, 4, 3, 3) * torch.tensor([1.0, 2.0, 0.5, 3.0]).view(1, 4, 1, 1) + 2.0 * step
        bn(x)
    bn.eval()
    x = torch.randn(2, 4, 3, 3) * 2.0 + 1.0
    with torch.no_grad():
        y = bn(x)
        y64 = bn.double()(x.double())
        bn.float()
    entries = [entry("bn." + k, v) for k, v in bn.state_dict().items()]
    half = torch.nn.BatchNorm2d(4)
    half.load_state_dict(bn.state_dict())
    half.to(torch.bfloat16)
    for k, v in half.state_dict().items():
        entries.append(entry("bf16.bn." + k, v))
        if v.dtype == torch.bfloat16:
            entries.append(entry("bf16_as_f32.bn." + k, v.float()))
    entries += [entry("eval.input", x), entry("eval.output", y), entry("eval.output_f64", y64)]
    with open(sys.argv[1], "wb") as f:
        f.write(file_bytes(entries, metadata={"written_by": "tests/io/make_pytorch_state.py",
                                              "torch": torch.__version__}, pad=True))


if __name__ == "__main__":
    main()
