// libFuzzer target of the safetensors reader (batchnorm/io/safetensors.hpp) and of
// load_state_dict on what it reads. The input is a file's bytes, as they are.
//
// Oracles, besides the sanitizers (address, undefined):
//   * parse_safetensors either returns or throws std::runtime_error; anything else aborts;
//   * what it returns serializes and parses back to the same tensors and metadata;
//   * every tensor of one dimension (at most 4096 elements) loads as a BatchNorm1d<float>'s
//     weight or throws std::invalid_argument, and a load that throws changes nothing.
// Seeds: corpus_safetensors/ (tests/io/write_safetensors.py's files and this library's).
#include <batchnorm/batchnorm.hpp>
#include <batchnorm/io/safetensors.hpp>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <stdexcept>

namespace {

[[noreturn]] void oracle_failed(const char* what) {
  std::fprintf(stderr, "fuzz_safetensors: oracle failed: %s\n", what);
  std::abort();
}

void check_load(const batchnorm::StateTensor& t) {
  if (t.shape.size() != 1 || t.shape[0] < 1 || t.shape[0] > 4096) return;
  batchnorm::BatchNorm1d<float> bn(batchnorm::BatchNormOptions(t.shape[0]).track_running_stats(false));
  bn.weight().setConstant(7.0f);
  try {
    bn.load_state_dict({{"weight", t}}, "", false);
  } catch (const std::invalid_argument&) {
    for (Eigen::Index c = 0; c < bn.weight().size(); ++c)
      if (bn.weight()(c) != 7.0f) oracle_failed("a load that threw changed the weight");
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  batchnorm::io::Safetensors file;
  try {
    file = batchnorm::io::parse_safetensors(data, size, "fuzz");
  } catch (const std::runtime_error&) {
    return 0;
  }
  const std::vector<unsigned char> again = batchnorm::io::serialize_safetensors(file.tensors, file.metadata);
  const batchnorm::io::Safetensors back = batchnorm::io::parse_safetensors(again.data(), again.size(), "round trip");
  if (back.metadata != file.metadata) oracle_failed("metadata changed in a round trip");
  if (back.tensors.size() != file.tensors.size()) oracle_failed("tensor count changed in a round trip");
  for (const auto& [name, t] : file.tensors) {
    const auto it = back.tensors.find(name);
    if (it == back.tensors.end() || it->second.dtype != t.dtype || it->second.shape != t.shape || it->second.data != t.data)
      oracle_failed("a tensor changed in a round trip");
    check_load(t);
  }
  return 0;
}
