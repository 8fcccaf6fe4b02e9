// The body each translation unit compiles (see tu.hpp); TU_FUNCTION names the function. The
// functional layer only: Eigen's own inline functions differ between -march settings (its
// aligned allocation), so Eigen types must not cross such translation units whatever batchnorm
// does.
#include <batchnorm/functional.hpp>
#include <batchnorm/isa.hpp>

#include "tu.hpp"

TuResult TU_FUNCTION(const std::vector<float>& x) {
  static batchnorm::Isa ran = batchnorm::Isa::generic;
  batchnorm::detail::plan_observer = [](const batchnorm::detail::Plan&, batchnorm::Isa isa) { ran = isa; };
  const batchnorm::functional::View v{4, 3, 35};  // (N, C, H*W) = (4, 3, 5 * 7), RowMajor
  std::vector<float> y(x.size());
  std::vector<double> mean(3), invstd(3);
  batchnorm::functional::forward_training(x.data(), v, static_cast<const float*>(nullptr),
                                          static_cast<const float*>(nullptr), static_cast<float*>(nullptr),
                                          static_cast<float*>(nullptr), 0.0, 1e-5, y.data(), mean.data(), invstd.data());
  batchnorm::detail::plan_observer = nullptr;
  return {batchnorm::isa_name(ran), batchnorm::isa_name(batchnorm::active_isa()), y};
}
