// Loads a batch-norm layer's trained state from a safetensors file (as PyTorch names it) and
// runs it in eval mode.
//
//   load_pytorch_state                       writes bn_state.safetensors itself (a BatchNorm2d
//                                            trained for a few steps here), then loads it
//   load_pytorch_state FILE [PREFIX]         loads the layer PREFIX (e.g. "layer1.0.bn1.") of
//                                            FILE; without PREFIX, the first layer in FILE that
//                                            has a running_var
//
// From PyTorch: safetensors.torch.save_file(model.state_dict(), "model.safetensors"), or any
// writer of the format (tests/io/write_safetensors.py needs only Python's standard library).
#include <batchnorm/batchnorm.hpp>
#include <batchnorm/io/safetensors.hpp>

#include <cmath>
#include <cstdio>
#include <exception>
#include <random>
#include <string>

namespace {

/// A BatchNorm2d trained for three steps on seeded data, saved under "features.1." (as the
/// second module of an nn.Sequential), with a note in the file's metadata.
void write_own_file(const std::string& path) {
  batchnorm::BatchNorm2d<float> bn(4);
  bn.weight().setValues({0.5f, 1.5f, -2.0f, 1.0f});
  bn.bias().setValues({0.0f, -1.0f, 0.25f, 3.0f});
  std::mt19937 rng(2026);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  Eigen::Tensor<float, 4, Eigen::RowMajor> x(8, 4, 5, 5);
  for (int step = 0; step < 3; ++step) {
    for (Eigen::Index i = 0; i < x.size(); ++i) x.data()[i] = 2.0f + 3.0f * normal(rng);
    bn.forward(x);
  }
  batchnorm::io::write_safetensors(path, bn.state_dict("features.1."), {{"note", "written by load_pytorch_state"}});
  std::printf("wrote %s\n", path.c_str());
}

std::string shape_string(const std::vector<std::int64_t>& shape) {
  std::string s = "[";
  for (std::size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

}  // namespace

int main(int argc, char** argv) try {
  std::string path = argc > 1 ? argv[1] : "bn_state.safetensors";
  if (argc < 2) write_own_file(path);

  const batchnorm::io::Safetensors file = batchnorm::io::read_safetensors(path);
  std::printf("%s: %zu tensors\n", path.c_str(), file.tensors.size());
  for (const auto& [key, value] : file.metadata) std::printf("  metadata %s = %s\n", key.c_str(), value.c_str());

  std::string prefix = argc > 2 ? argv[2] : "";
  if (argc <= 2) {
    const std::string suffix = "running_var";
    for (const auto& entry : file.tensors) {
      const std::string& name = entry.first;
      if (name.size() >= suffix.size() && name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0) {
        prefix = name.substr(0, name.size() - suffix.size());
        break;
      }
    }
  }
  const auto running_var = file.tensors.find(prefix + "running_var");
  if (running_var == file.tensors.end() || running_var->second.shape.size() != 1) {
    std::fprintf(stderr, "no batch-norm layer \"%s\" (with a one-dimensional running_var) in %s\n", prefix.c_str(),
                 path.c_str());
    return 1;
  }
  const std::int64_t channels = running_var->second.shape[0];
  for (const char* name : {"weight", "bias", "running_mean", "running_var", "num_batches_tracked"}) {
    const auto it = file.tensors.find(prefix + name);
    if (it != file.tensors.end())
      std::printf("  %s%s: %s %s\n", prefix.c_str(), name, batchnorm::dtype_name(it->second.dtype),
                  shape_string(it->second.shape).c_str());
  }

  // PyTorch's defaults (eps 1e-5); a model trained with others needs the same options here.
  batchnorm::BatchNorm2d<float> bn(channels);
  bn.load_state_dict(file.tensors, prefix);  // strict: every key of the layer, nothing else under prefix
  bn.eval();
  std::printf("loaded layer \"%s\": %lld channels, num_batches_tracked %lld\n", prefix.c_str(),
              static_cast<long long>(channels), static_cast<long long>(bn.num_batches_tracked()));

  // Eval on data drawn from the running statistics: each channel's output has mean ~ bias and
  // standard deviation ~ |weight|.
  Eigen::Tensor<float, 4, Eigen::RowMajor> x(16, channels, 8, 8);
  std::mt19937 rng(1);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (Eigen::Index n = 0; n < x.dimension(0); ++n)
    for (Eigen::Index c = 0; c < channels; ++c)
      for (Eigen::Index h = 0; h < 8; ++h)
        for (Eigen::Index w = 0; w < 8; ++w)
          x(n, c, h, w) = bn.running_mean()(c) + std::sqrt(bn.running_var()(c)) * normal(rng);
  const Eigen::Tensor<float, 4, Eigen::RowMajor> y = bn.forward(x);
  std::printf("eval on data drawn from the running statistics (16 x %lld x 8 x 8):\n", static_cast<long long>(channels));
  std::printf("  channel  running_mean  running_var  weight    bias  | output mean   std\n");
  for (Eigen::Index c = 0; c < channels; ++c) {
    double sum = 0, sum2 = 0;
    const double m = static_cast<double>(x.size() / channels);
    for (Eigen::Index n = 0; n < y.dimension(0); ++n)
      for (Eigen::Index h = 0; h < 8; ++h)
        for (Eigen::Index w = 0; w < 8; ++w) sum += static_cast<double>(y(n, c, h, w));
    const double mean = sum / m;
    for (Eigen::Index n = 0; n < y.dimension(0); ++n)
      for (Eigen::Index h = 0; h < 8; ++h)
        for (Eigen::Index w = 0; w < 8; ++w) sum2 += std::pow(static_cast<double>(y(n, c, h, w)) - mean, 2);
    std::printf("  %7lld  %12.5f  %11.5f  %6.3f  %6.3f  | %11.3f  %5.3f\n", static_cast<long long>(c),
                static_cast<double>(bn.running_mean()(c)), static_cast<double>(bn.running_var()(c)),
                static_cast<double>(bn.weight()(c)), static_cast<double>(bn.bias()(c)), mean, std::sqrt(sum2 / m));
  }
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "load_pytorch_state: %s\n", e.what());
  return 1;
}
