// Consumer test program of the io component: a BatchNorm1d's state through safetensors bytes
// into a second module; exits 0 only if the running statistics arrive bitwise.
#include <batchnorm/batchnorm.hpp>
#include <batchnorm/io/safetensors.hpp>

#include <cstdio>

int main() {
  batchnorm::BatchNorm1d<float> a(3), b(3);
  Eigen::Tensor<float, 2> x(4, 3);
  for (Eigen::Index i = 0; i < x.size(); ++i) x.data()[i] = static_cast<float>(i * i) * 0.25f;
  a.forward(x);
  const std::vector<unsigned char> bytes = batchnorm::io::serialize_safetensors(a.state_dict("bn."));
  b.load_state_dict(batchnorm::io::parse_safetensors(bytes.data(), bytes.size()).tensors, "bn.");
  int failures = 0;
  for (Eigen::Index c = 0; c < 3; ++c)
    failures += a.running_mean()(c) != b.running_mean()(c) || a.running_var()(c) != b.running_var()(c);
  std::printf("io consumer: %s\n", failures == 0 ? "ok" : "FAILED");
  return failures == 0 ? 0 : 1;
}
