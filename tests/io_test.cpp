// Interop: other frameworks' conventions (BatchNormOptions presets, running_var_unbiased), the
// modules' state under PyTorch's names (state.hpp, state_dict / load_state_dict), and
// safetensors files (io/safetensors.hpp), checked against files of an independent writer
// (io/write_safetensors.py, run when this test binary is built).
#include <catch2/catch.hpp>

#include <batchnorm/batchnorm.hpp>
#include <batchnorm/io/safetensors.hpp>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "support/expect_throw.hpp"
#include "support/tolerance.hpp"

using namespace batchnorm_test;
using batchnorm::BatchNorm1d;
using batchnorm::BatchNorm2d;
using batchnorm::BatchNormOptions;
using batchnorm::Dtype;
using batchnorm::StateDict;
using batchnorm::StateTensor;

namespace {

/// The directory io/write_safetensors.py wrote (at build time, tests/CMakeLists.txt).
std::string python_dir() { return BATCHNORM_TEST_PY_DIR; }

nlohmann::json read_json(const std::string& path) {
  std::ifstream in(path);
  INFO(path << ": written by io/write_safetensors.py when batchnorm_io_tests is built");
  REQUIRE(in.good());
  return nlohmann::json::parse(in);
}

template <class T>
std::uint64_t bits_of(T v) {
  if constexpr (sizeof(T) == 4) {
    std::uint32_t b;
    std::memcpy(&b, &v, 4);
    return b;
  } else {
    std::uint64_t b;
    std::memcpy(&b, &v, 8);
    return b;
  }
}

/// A tensor of `dtype` and `shape` with the given raw little-endian element bits.
StateTensor raw_tensor(Dtype dtype, std::vector<std::int64_t> shape, const std::vector<std::uint64_t>& elements) {
  StateTensor t;
  t.dtype = dtype, t.shape = std::move(shape);
  const std::size_t size = batchnorm::dtype_size(dtype);
  t.data.resize(elements.size() * size);
  for (std::size_t i = 0; i < elements.size(); ++i)
    for (std::size_t b = 0; b < size; ++b) t.data[i * size + b] = static_cast<unsigned char>(elements[i] >> (8 * b));
  return t;
}

/// Everything a module's state holds, as doubles (bitwise comparable through bits_of).
template <class M>
std::vector<double> snapshot(const M& bn) {
  std::vector<double> v;
  const auto add = [&](const auto& t) {
    for (Eigen::Index k = 0; k < t.size(); ++k) v.push_back(double(t(k)));
  };
  if (bn.options().affine()) add(bn.weight()), add(bn.bias());
  if (bn.options().track_running_stats()) {
    add(bn.running_mean()), add(bn.running_var());
    v.push_back(double(bn.num_batches_tracked()));
  }
  return v;
}

/// Channel 0: {4, 7, 13, 16} (mean 10, biased var 22.5, unbiased 30); channel 1: {1, 2, 3, 10}
/// (mean 4, biased var 12.5, unbiased 50/3). (N, C) = (4, 2).
template <class T>
Eigen::Tensor<T, 2> hand_batch() {
  Eigen::Tensor<T, 2> x(4, 2);
  const double c0[] = {4, 7, 13, 16}, c1[] = {1, 2, 3, 10};
  for (int n = 0; n < 4; ++n) x(n, 0) = static_cast<T>(c0[n]), x(n, 1) = static_cast<T>(c1[n]);
  return x;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Conventions

TEST_CASE("framework presets set every default", "[io][conventions]") {
  const auto pt = BatchNormOptions::pytorch(8), keras = BatchNormOptions::keras(8), onnx = BatchNormOptions::onnx(8),
             flax = BatchNormOptions::flax(8), plain = BatchNormOptions(8);
  CHECK(pt.eps() == plain.eps());
  CHECK(pt.momentum() == plain.momentum());
  CHECK(pt.running_var_unbiased() == plain.running_var_unbiased());
  CHECK(plain.running_var_unbiased());
  CHECK(keras.eps() == 1e-3);
  CHECK(keras.momentum() == 0.01);
  CHECK(!keras.running_var_unbiased());
  CHECK(onnx.eps() == 1e-5);
  CHECK(onnx.momentum() == 0.1);
  CHECK(!onnx.running_var_unbiased());
  CHECK(flax.eps() == 1e-5);
  CHECK(flax.momentum() == 0.01);
  CHECK(!flax.running_var_unbiased());
  for (const auto& o : {pt, keras, onnx, flax}) {
    CHECK(o.num_features() == 8);
    CHECK(o.affine());
    CHECK(o.track_running_stats());
    CHECK(!o.channels_last());
  }
}

TEMPLATE_TEST_CASE("presets against hand-computed running statistics", "[io][conventions]", float, double) {
  using T = TestType;
  const Eigen::Tensor<T, 2> x = hand_batch<T>();
  struct Expected {
    const char* name;
    BatchNormOptions options;
    double mean0, var0, mean1, var1;
  };
  // running = (1 - f) * running + f * batch from running_mean 0, running_var 1.
  const Expected cases[] = {
      {"pytorch", BatchNormOptions::pytorch(2), 1.0, 0.9 + 0.1 * 30, 0.4, 0.9 + 0.1 * 50.0 / 3},
      {"keras", BatchNormOptions::keras(2), 0.1, 0.99 + 0.01 * 22.5, 0.04, 0.99 + 0.01 * 12.5},
      {"onnx", BatchNormOptions::onnx(2), 1.0, 0.9 + 0.1 * 22.5, 0.4, 0.9 + 0.1 * 12.5},
      {"flax", BatchNormOptions::flax(2), 0.1, 0.99 + 0.01 * 22.5, 0.04, 0.99 + 0.01 * 12.5},
  };
  const double tol = std::is_same_v<T, float> ? kFloatTrainTol : kDoubleTol;
  for (const Expected& e : cases) {
    INFO(e.name);
    BatchNorm1d<T> bn(e.options);
    bn.forward(x);
    CHECK(rel_err(double(bn.running_mean()(0)), e.mean0) <= tol);
    CHECK(rel_err(double(bn.running_var()(0)), e.var0) <= tol);
    CHECK(rel_err(double(bn.running_mean()(1)), e.mean1) <= tol);
    CHECK(rel_err(double(bn.running_var()(1)), e.var1) <= tol);
  }
}

TEMPLATE_TEST_CASE("functional update_running_stats, biased and unbiased", "[io][conventions]", float, double) {
  using T = TestType;
  using A = batchnorm::functional::accum_t<T>;
  namespace F = batchnorm::functional;
  const A mean[] = {A(2), A(-1)}, var[] = {A(3), A(0.5)};
  T rm[] = {T(0), T(1)}, rv[] = {T(1), T(2)};
  F::update_running_stats<T>(2, mean, var, 4, 0.25, rm, rv, /*unbiased=*/false);
  CHECK(rm[0] == T(0.5));
  CHECK(rm[1] == T(0.5));
  CHECK(rv[0] == T(0.75 + 0.25 * 3));   // the biased var, no factor 4/3
  CHECK(rv[1] == T(1.5 + 0.25 * 0.5));
  // One value a channel: a biased variance exists (0), an unbiased one does not.
  const A zero[] = {A(0), A(0)};
  F::update_running_stats<T>(2, mean, zero, 1, 1.0, rm, rv, false);
  CHECK(rm[0] == T(2));
  CHECK(rv[0] == T(0));
  expect_throw<std::invalid_argument>([&] { F::update_running_stats<T>(2, mean, zero, 1, 1.0, rm, rv, true); },
                                      "for the unbiased variance, got 1");
  CHECK(rm[0] == T(2));  // unchanged by the call that threw
}

namespace {

/// A framework's running average as its documentation writes it, in long double, over the
/// batches of one channel: momentum_old is the framework's own momentum (weight of the old value).
struct Documented {
  const char* name;
  BatchNormOptions options;
  long double momentum_old;
  bool unbiased;
};

}  // namespace

TEMPLATE_TEST_CASE("presets follow each framework's documented running average over several batches",
                   "[io][conventions]", float, double) {
  using T = TestType;
  // Keras (BatchNormalization docs):  moving_mean = moving_mean * momentum + mean(batch) * (1 - momentum),
  //                                   moving_var = moving_var * momentum + var(batch) * (1 - momentum)
  // ONNX (BatchNormalization, training_mode): running_mean = input_mean * momentum + current_mean * (1 - momentum),
  //                                   current_var = ReduceVar(X) (population variance)
  // Flax (linen.BatchNorm):           ra_mean = momentum * ra_mean + (1 - momentum) * mean, var = E[x^2] - E[x]^2
  // PyTorch (BatchNorm2d docs):       x_new = (1 - momentum) * x + momentum * x_t, unbiased variance
  const Documented frameworks[] = {
      {"keras", BatchNormOptions::keras(3), 0.99L, false},
      {"onnx", BatchNormOptions::onnx(3), 0.9L, false},
      {"flax", BatchNormOptions::flax(3), 0.99L, false},
      {"pytorch", BatchNormOptions::pytorch(3), 0.9L, true},
  };
  const double tol = std::is_same_v<T, float> ? kFloatTrainTol : kDoubleTol;
  for (const Documented& fw : frameworks) {
    INFO(fw.name);
    BatchNorm2d<T> bn(fw.options);
    std::vector<long double> rm(3, 0.0L), rv(3, 1.0L);
    std::mt19937 rng(7);
    std::normal_distribution<double> normal(0.0, 1.0);
    for (int step = 0; step < 6; ++step) {
      const int n = 2 + step % 3, hw = 3;  // batches of 2, 3, 4 samples of 3 x 1 values
      Eigen::Tensor<T, 4, Eigen::RowMajor> x(n, 3, hw, 1);
      for (Eigen::Index k = 0; k < x.size(); ++k) x.data()[k] = static_cast<T>(5.0 + 2.0 * normal(rng));
      bn.forward(x);
      for (int c = 0; c < 3; ++c) {
        long double sum = 0, sum2 = 0;
        const int m = n * hw;
        for (int i = 0; i < n; ++i)
          for (int h = 0; h < hw; ++h) {
            const long double v = x(i, c, h, 0);
            sum += v, sum2 += v * v;
          }
        const long double mean = sum / m, var = sum2 / m - mean * mean;
        const long double batch_var = fw.unbiased ? var * m / (m - 1) : var;
        rm[static_cast<std::size_t>(c)] = rm[static_cast<std::size_t>(c)] * fw.momentum_old + mean * (1 - fw.momentum_old);
        rv[static_cast<std::size_t>(c)] = rv[static_cast<std::size_t>(c)] * fw.momentum_old + batch_var * (1 - fw.momentum_old);
      }
    }
    for (int c = 0; c < 3; ++c) {
      CHECK(rel_err(double(bn.running_mean()(c)), double(rm[static_cast<std::size_t>(c)])) <= tol);
      CHECK(rel_err(double(bn.running_var()(c)), double(rv[static_cast<std::size_t>(c)])) <= tol);
    }
    // Eval with the framework's eps: y = (x - moving_mean) / sqrt(moving_var + eps) (weight 1, bias 0).
    bn.eval();
    Eigen::Tensor<T, 4, Eigen::RowMajor> x(2, 3, 2, 1);
    for (Eigen::Index k = 0; k < x.size(); ++k) x.data()[k] = static_cast<T>(normal(rng));
    const Eigen::Tensor<T, 4, Eigen::RowMajor> y = bn.forward(x);
    for (int i = 0; i < 2; ++i)
      for (int c = 0; c < 3; ++c)
        for (int h = 0; h < 2; ++h) {
          const long double ref = (static_cast<long double>(x(i, c, h, 0)) - static_cast<long double>(bn.running_mean()(c))) /
                                  std::sqrt(static_cast<long double>(bn.running_var()(c)) + fw.options.eps());
          CHECK(rel_err(double(y(i, c, h, 0)), double(ref)) <= tol);
        }
  }
}

// ---------------------------------------------------------------------------------------------
// State

TEMPLATE_TEST_CASE("state_dict: PyTorch's keys, dtypes and shapes, the values bitwise", "[io][state]", float, double) {
  using T = TestType;
  const Dtype dtype = std::is_same_v<T, float> ? Dtype::F32 : Dtype::F64;
  for (const bool affine : {true, false})
    for (const bool tracking : {true, false}) {
      INFO("affine " << affine << ", tracking " << tracking);
      BatchNorm1d<T> bn(BatchNormOptions(2).affine(affine).track_running_stats(tracking));
      if (affine) bn.weight().setValues({T(0.5), T(-3)}), bn.bias().setValues({T(1e-3), T(7)});
      bn.forward(hand_batch<T>());
      bn.forward(hand_batch<T>());
      const StateDict d = bn.state_dict("features.3.");
      std::vector<std::string> keys;
      for (const auto& kv : d) keys.push_back(kv.first);
      std::vector<std::string> expected;
      if (affine) expected.push_back("features.3.bias");
      if (tracking)
        expected.insert(expected.end(), {"features.3.num_batches_tracked", "features.3.running_mean", "features.3.running_var"});
      if (affine) expected.push_back("features.3.weight");
      CHECK(keys == expected);
      const auto check_vector = [&](const std::string& key, const Eigen::Tensor<T, 1>& values) {
        INFO(key);
        const StateTensor& t = d.at(key);
        CHECK(t.dtype == dtype);
        CHECK(t.shape == std::vector<std::int64_t>{2});
        REQUIRE(t.data.size() == 2 * sizeof(T));
        for (int c = 0; c < 2; ++c) CHECK(bits_of(static_cast<T>(t.to_double(c))) == bits_of(values(c)));
      };
      if (affine) check_vector("features.3.weight", bn.weight()), check_vector("features.3.bias", bn.bias());
      if (tracking) {
        check_vector("features.3.running_mean", bn.running_mean());
        check_vector("features.3.running_var", bn.running_var());
        const StateTensor& nbt = d.at("features.3.num_batches_tracked");
        CHECK(nbt.dtype == Dtype::I64);
        CHECK(nbt.shape.empty());
        CHECK(nbt.numel() == 1);
        CHECK(nbt.to_double(0) == 2.0);
      }
    }
}

TEMPLATE_TEST_CASE("load_state_dict: a round trip restores the module bitwise", "[io][state]", float, double) {
  using T = TestType;
  BatchNorm2d<T> a(BatchNormOptions(3).momentum(std::nullopt)), b(3);
  a.weight().setValues({T(0.25), T(2), T(-1)});
  std::mt19937 rng(3);
  std::normal_distribution<double> normal(1.0, 3.0);
  Eigen::Tensor<T, 4> x(2, 3, 4, 5);
  for (int step = 0; step < 3; ++step) {
    for (Eigen::Index k = 0; k < x.size(); ++k) x.data()[k] = static_cast<T>(normal(rng));
    a.forward(x);
  }
  const batchnorm::LoadResult r = b.load_state_dict(a.state_dict());
  CHECK(r.missing_keys.empty());
  CHECK(r.unexpected_keys.empty());
  const std::vector<double> sa = snapshot(a), sb = snapshot(b);
  REQUIRE(sa.size() == sb.size());
  for (std::size_t i = 0; i < sa.size(); ++i) CHECK(bits_of(sa[i]) == bits_of(sb[i]));
  a.eval(), b.eval();
  const Eigen::Tensor<T, 4> ya = a.forward(x), yb = b.forward(x);
  for (Eigen::Index k = 0; k < ya.size(); ++k) CHECK(bits_of(ya.data()[k]) == bits_of(yb.data()[k]));
}

TEST_CASE("load_state_dict converts F64, F32, F16 and BF16", "[io][state]") {
  // F16 0x3c00 = 1, 0x0001 = 2^-24 (subnormal), 0x7bff = 65504, 0xfc00 = -Inf;
  // BF16 0x3fc0 = 1.5, 0x8001 = -2^-133 (subnormal), 0x7f80 = Inf, 0x4049 = 3.140625.
  StateDict d;
  d["weight"] = raw_tensor(Dtype::F16, {4}, {0x3c00, 0x0001, 0x7bff, 0xfc00});
  d["bias"] = raw_tensor(Dtype::BF16, {4}, {0x3fc0, 0x8001, 0x7f80, 0x4049});
  const double mean[] = {0.1, -1e-30, 3.4028235e38, 1e-46};  // rounds to 0.1f, -1e-30f, FLT_MAX, 0
  const float var[] = {1.0f, 2.5f, 1e-40f, 3e38f};
  d["running_mean"] = StateTensor::from_values(mean, {4});
  d["running_var"] = StateTensor::from_values(var, {4});
  const std::int64_t nbt = 5;
  d["num_batches_tracked"] = StateTensor::from_values(&nbt, {});
  BatchNorm1d<float> f(4);
  f.load_state_dict(d);
  CHECK(f.weight()(0) == 1.0f);
  CHECK(f.weight()(1) == std::ldexp(1.0f, -24));
  CHECK(f.weight()(2) == 65504.0f);
  CHECK(f.weight()(3) == -std::numeric_limits<float>::infinity());
  CHECK(f.bias()(0) == 1.5f);
  CHECK(f.bias()(1) == -std::ldexp(1.0f, -133));
  CHECK(f.bias()(2) == std::numeric_limits<float>::infinity());
  CHECK(f.bias()(3) == 3.140625f);
  for (int c = 0; c < 4; ++c) CHECK(bits_of(f.running_mean()(c)) == bits_of(static_cast<float>(c == 2 ? 3.4028234663852886e38 : mean[c])));
  for (int c = 0; c < 4; ++c) CHECK(bits_of(f.running_var()(c)) == bits_of(var[c]));
  CHECK(f.num_batches_tracked() == 5);
  BatchNorm1d<double> g(4);
  g.load_state_dict(d);
  for (int c = 0; c < 4; ++c) CHECK(g.running_mean()(c) == mean[c]);
  for (int c = 0; c < 4; ++c) CHECK(g.running_var()(c) == double(var[c]));
  CHECK(g.weight()(1) == std::ldexp(1.0, -24));
  // A finite F64 value beyond float's range is an error, not Inf.
  const double big[] = {1, 1, 1e39, 1};
  d["running_mean"] = StateTensor::from_values(big, {4});
  expect_throw<std::invalid_argument>([&] { f.load_state_dict(d); }, "key \"running_mean\": element 2 is 9.99");
  expect_throw<std::invalid_argument>([&] { f.load_state_dict(d); }, "e+38, beyond the range of float");
  g.load_state_dict(d);
  CHECK(g.running_mean()(2) == 1e39);
  // Float's largest plus half its last step, 2^128 - 2^103, is a tie that rounds to Inf: refused.
  const double tie[] = {1, 1, std::ldexp(1.0, 128) - std::ldexp(1.0, 103), 1};
  d["running_mean"] = StateTensor::from_values(tie, {4});
  expect_throw<std::invalid_argument>([&] { f.load_state_dict(d); }, "beyond the range of float");
  d["running_mean"] = StateTensor::from_values(mean, {4});
  CHECK(f.running_mean()(2) == std::numeric_limits<float>::max());  // still the first load's
}

TEMPLATE_TEST_CASE("load_state_dict: strict errors name the key, the expectation and the finding; nothing changes",
                   "[io][state][errors]", float, double) {
  using T = TestType;
  BatchNorm1d<T> source(3);
  Eigen::Tensor<T, 2> x(5, 3);
  x.setRandom();
  source.forward(x);
  const StateDict good = source.state_dict("bn.");
  BatchNorm1d<T> bn(3);
  bn.weight().setConstant(T(4));
  const std::vector<double> before = snapshot(bn);
  const auto unchanged = [&] {
    const std::vector<double> now = snapshot(bn);
    REQUIRE(now.size() == before.size());
    for (std::size_t i = 0; i < now.size(); ++i) CHECK(bits_of(now[i]) == bits_of(before[i]));
  };
  const std::string op = "BatchNorm1d::load_state_dict: ";
  SECTION("missing") {
    StateDict d = good;
    d.erase("bn.running_var");
    expect_throw<std::invalid_argument>([&] { bn.load_state_dict(d, "bn."); },
                                        "missing key \"bn.running_var\" (expected a floating tensor (F64, F32, F16 or BF16) of shape [3])");
  }
  SECTION("unexpected, under the prefix only") {
    StateDict d = good;
    d["bn.extra"] = d["bn.weight"];
    d["other.weight"] = d["bn.weight"];
    expect_throw<std::invalid_argument>([&] { bn.load_state_dict(d, "bn."); }, "unexpected key \"bn.extra\"");
    d.erase("bn.extra");
    bn.load_state_dict(d, "bn.");  // another layer's keys are not this one's business
    bn.load_state_dict(source.state_dict("bn."), "bn.");
    return;
  }
  SECTION("wrong shape") {
    StateDict d = good;
    const T w[] = {T(1), T(2)};
    d["bn.weight"] = StateTensor::from_values(w, {2});
    expect_throw<std::invalid_argument>([&] { bn.load_state_dict(d, "bn."); },
                                        "key \"bn.weight\": expected a floating tensor (F64, F32, F16 or BF16) of shape [3], found " +
                                            std::string(std::is_same_v<T, float> ? "F32" : "F64") + " of shape [2]");
    const std::int64_t one[] = {1};
    d = good;
    d["bn.num_batches_tracked"] = StateTensor::from_values(one, {1});
    expect_throw<std::invalid_argument>([&] { bn.load_state_dict(d, "bn."); },
                                        "key \"bn.num_batches_tracked\": expected I64 of shape [], found I64 of shape [1]");
  }
  SECTION("a dtype that does not convert") {
    StateDict d = good;
    d["bn.running_mean"] = raw_tensor(Dtype::I32, {3}, {1, 2, 3});
    expect_throw<std::invalid_argument>([&] { bn.load_state_dict(d, "bn."); }, "found I32 of shape [3]");
    d = good;
    const double nbt = 3;
    d["bn.num_batches_tracked"] = StateTensor::from_values(&nbt, {});
    expect_throw<std::invalid_argument>([&] { bn.load_state_dict(d, "bn."); }, "expected I64 of shape [], found F64 of shape []");
  }
  SECTION("a count the next forward cannot increment") {
    StateDict d = good;
    for (const std::int64_t count : {std::int64_t(-1), std::numeric_limits<std::int64_t>::max()}) {
      d["bn.num_batches_tracked"] = StateTensor::from_values(&count, {});
      expect_throw<std::invalid_argument>([&] { bn.load_state_dict(d, "bn."); },
                                          "key \"bn.num_batches_tracked\": expected a count from 0 to 2^63 - 2, found " +
                                              std::to_string(count));
    }
  }
  SECTION("byte count") {
    StateDict d = good;
    d["bn.bias"].data.pop_back();
    expect_throw<std::invalid_argument>([&] { bn.load_state_dict(d, "bn."); }, "key \"bn.bias\": ");
    expect_throw<std::invalid_argument>([&] { bn.load_state_dict(d, "bn."); }, "bytes of data, found");
  }
  SECTION("every problem in one message, the valid entries not loaded either") {
    StateDict d = good;
    d.erase("bn.weight");
    d["bn.zzz"] = d["bn.bias"];
    try {
      bn.load_state_dict(d, "bn.");
      FAIL("did not throw");
    } catch (const std::invalid_argument& e) {
      const std::string what = e.what();
      CHECK_THAT(what, Catch::Matchers::StartsWith(op + "2 problem(s) loading the state under prefix \"bn.\""));
      CHECK_THAT(what, Catch::Matchers::Contains("missing key \"bn.weight\""));
      CHECK_THAT(what, Catch::Matchers::Contains("unexpected key \"bn.zzz\""));
      CHECK_THAT(what, Catch::Matchers::EndsWith("nothing was changed"));
    }
  }
  unchanged();
}

TEMPLATE_TEST_CASE("load_state_dict(strict = false) keeps what is missing and reports both lists", "[io][state]", float, double) {
  using T = TestType;
  BatchNorm1d<T> source(2), bn(2);
  source.forward(hand_batch<T>());
  StateDict d = source.state_dict("m.");
  d.erase("m.running_var");
  d.erase("m.weight");
  d["m.surplus"] = d["m.bias"];
  d["n.ignored"] = d["m.bias"];
  bn.weight().setValues({T(9), T(8)});
  const batchnorm::LoadResult r = bn.load_state_dict(d, "m.", /*strict=*/false);
  CHECK(r.missing_keys == std::vector<std::string>{"m.weight", "m.running_var"});
  CHECK(r.unexpected_keys == std::vector<std::string>{"m.surplus"});
  CHECK(bn.weight()(0) == T(9));  // kept
  CHECK(bn.running_var()(0) == T(1));
  CHECK(bn.running_mean()(0) == source.running_mean()(0));  // loaded
  CHECK(bn.num_batches_tracked() == 1);
  // Wrong shapes still throw without strict, as PyTorch's.
  const T w[] = {T(1)};
  d["m.bias"] = StateTensor::from_values(w, {1});
  expect_throw<std::invalid_argument>([&] { bn.load_state_dict(d, "m.", false); }, "key \"m.bias\": expected");
  CHECK(bn.bias()(0) == source.bias()(0));
}

// ---------------------------------------------------------------------------------------------
// safetensors

namespace io = batchnorm::io;

namespace {

/// One tensor of every dtype (shapes including [] and a zero extent), bytes from a fixed seed.
StateDict every_dtype() {
  StateDict d;
  std::mt19937 rng(11);
  int i = 0;
  for (int t = 0; t <= static_cast<int>(Dtype::F64); ++t, ++i) {
    StateTensor x;
    x.dtype = static_cast<Dtype>(t);
    x.shape = i % 3 == 0 ? std::vector<std::int64_t>{} : i % 3 == 1 ? std::vector<std::int64_t>{2, 3} : std::vector<std::int64_t>{5};
    x.data.resize(static_cast<std::size_t>(x.numel()) * batchnorm::dtype_size(x.dtype));
    for (auto& b : x.data) b = static_cast<unsigned char>(rng());
    d.emplace(std::string("t.") + batchnorm::dtype_name(x.dtype), std::move(x));
  }
  StateTensor empty;
  empty.dtype = Dtype::F32, empty.shape = {0, 4};
  d.emplace("empty", empty);
  return d;
}

void check_same(const StateDict& a, const StateDict& b) {
  REQUIRE(a.size() == b.size());
  for (const auto& [name, t] : a) {
    INFO(name);
    REQUIRE(b.count(name) == 1);
    const StateTensor& u = b.at(name);
    CHECK(t.dtype == u.dtype);
    CHECK(t.shape == u.shape);
    CHECK(t.data == u.data);
  }
}

}  // namespace

TEST_CASE("safetensors: a round trip is bitwise, aligned, and keeps the metadata", "[io][safetensors]") {
  const StateDict d = every_dtype();
  const std::map<std::string, std::string> meta{{"format", "pt"}, {"ünïcode", "välue"}};
  const std::vector<unsigned char> bytes = io::serialize_safetensors(d, meta);
  const io::Safetensors back = io::parse_safetensors(bytes.data(), bytes.size());
  check_same(d, back.tensors);
  CHECK(back.metadata == meta);
  // The data section starts at a multiple of 8, each tensor at a multiple of its element size.
  const std::uint64_t n = batchnorm::detail::load_le<std::uint64_t>(bytes.data());
  CHECK((8 + n) % 8 == 0);
  const auto header = nlohmann::json::parse(bytes.begin() + 8, bytes.begin() + 8 + static_cast<std::ptrdiff_t>(n));
  int tensors = 0;
  for (const auto& [name, info] : header.items()) {
    if (name == "__metadata__") continue;
    ++tensors;
    const auto dtype = batchnorm::dtype_from_name(info["dtype"].get<std::string>());
    REQUIRE(dtype);
    CHECK(info["data_offsets"][0].get<std::uint64_t>() % batchnorm::dtype_size(*dtype) == 0);
  }
  CHECK(tensors == static_cast<int>(d.size()));
  // Through a file: the same; an existing file is replaced whole.
  const std::string path = "io_test_roundtrip.safetensors";
  io::write_safetensors(path, {{"x", d.at("t.F32")}});
  io::write_safetensors(path, d, meta);
  const io::Safetensors from_file = io::read_safetensors(path);
  check_same(d, from_file.tensors);
  CHECK(from_file.metadata == meta);
  std::remove(path.c_str());
}

TEST_CASE("safetensors: what the writer refuses", "[io][safetensors][errors]") {
  StateDict d = every_dtype();
  d["t.F32"].data.pop_back();
  expect_throw<std::invalid_argument>([&] { (void)io::serialize_safetensors(d); },
                                      "tensor \"t.F32\" holds 19 bytes, its dtype and shape need 20");
  d = every_dtype();
  d["__metadata__"] = d["t.F32"];
  expect_throw<std::invalid_argument>([&] { (void)io::serialize_safetensors(d); }, "may not be named __metadata__");
  d = every_dtype();
  d["bad\xff"] = d["t.F32"];
  expect_throw<std::invalid_argument>([&] { (void)io::serialize_safetensors(d); }, "not valid UTF-8");
  d = every_dtype();
  d["t.F32"].shape = {-2, -3};
  expect_throw<std::invalid_argument>([&] { (void)io::serialize_safetensors(d); }, "tensor \"t.F32\" has an invalid shape");
  // An unwritable path: an error naming it; nothing is left behind.
  expect_throw<std::runtime_error>([&] { io::write_safetensors("no_such_directory/x.safetensors", every_dtype()); },
                                   "batchnorm::io: no_such_directory/x.safetensors.partial: cannot open for writing");
  expect_throw<std::runtime_error>([&] { (void)io::read_safetensors("no_such_file.safetensors"); },
                                   "batchnorm::io: no_such_file.safetensors: cannot open for reading");
  expect_throw<std::runtime_error>([&] { (void)io::read_safetensors("."); },
                                   "batchnorm::io: .: cannot open for reading: not a regular file");
}

TEST_CASE("safetensors: a zero extent makes an empty tensor whatever the other extents", "[io][safetensors]") {
  // 2^62 * 2 * 0 elements: the product of the non-zero extents fits no int64, the tensor is empty.
  const std::string header = R"({"e": {"dtype": "F64", "shape": [4611686018427387904, 2, 0], "data_offsets": [0, 0]}})";
  std::vector<unsigned char> bytes(8 + header.size());
  batchnorm::detail::store_le(static_cast<std::uint64_t>(header.size()), bytes.data());
  std::copy(header.begin(), header.end(), bytes.begin() + 8);
  const io::Safetensors file = io::parse_safetensors(bytes.data(), bytes.size());
  const StateTensor& e = file.tensors.at("e");
  CHECK(e.numel() == 0);
  CHECK(e.shape == std::vector<std::int64_t>{std::int64_t(1) << 62, 2, 0});
  const std::vector<unsigned char> again = io::serialize_safetensors(file.tensors);
  check_same(file.tensors, io::parse_safetensors(again.data(), again.size()).tensors);
}

TEST_CASE("safetensors: every truncation and every single-byte change of a file is a clean error or a valid file",
          "[io][safetensors][errors]") {
  StateDict d;
  const float w[] = {1.5f, -2.0f, 3.25f};
  const std::int64_t nbt = 9;
  d["bn.weight"] = StateTensor::from_values(w, {3});
  d["bn.num_batches_tracked"] = StateTensor::from_values(&nbt, {});
  const std::vector<unsigned char> bytes = io::serialize_safetensors(d, {{"k", "v"}});
  for (std::size_t size = 0; size < bytes.size(); ++size) {
    // A copy of exactly `size` bytes, so that ASan sees any read past it.
    const std::vector<unsigned char> cut(bytes.begin(), bytes.begin() + static_cast<std::ptrdiff_t>(size));
    INFO("size " << size);
    CHECK_THROWS_AS(io::parse_safetensors(cut.data(), cut.size(), "cut"), std::runtime_error);
  }
  long parsed = 0, refused = 0;
  for (std::size_t at = 0; at < bytes.size(); ++at)
    for (const unsigned flip : {0x01u, 0x20u, 0x80u, 0xffu}) {
      std::vector<unsigned char> changed = bytes;
      changed[at] = static_cast<unsigned char>(changed[at] ^ flip);
      try {
        (void)io::parse_safetensors(changed.data(), changed.size(), "changed");
        ++parsed;
      } catch (const std::runtime_error& e) {
        ++refused;
        CHECK_THAT(std::string(e.what()), Catch::Matchers::StartsWith("batchnorm::io: changed: "));
      }
    }
  CHECK(refused > 0);
  CHECK(parsed > 0);  // changes inside the data section still make a valid file
}

TEST_CASE("safetensors: a file of the independent writer, every tensor and the metadata", "[io][safetensors][python]") {
  const nlohmann::json expected = read_json(python_dir() + "/expected.json");
  const io::Safetensors file = io::read_safetensors(python_dir() + "/model.safetensors");
  CHECK(file.metadata == expected["metadata"].get<std::map<std::string, std::string>>());
  REQUIRE(file.tensors.size() == expected["tensors"].size());
  for (const auto& [name, e] : expected["tensors"].items()) {
    INFO(name);
    REQUIRE(file.tensors.count(name) == 1);
    const StateTensor& t = file.tensors.at(name);
    CHECK(batchnorm::dtype_name(t.dtype) == e["dtype"].get<std::string>());
    CHECK(t.shape == e["shape"].get<std::vector<std::int64_t>>());
    REQUIRE(t.numel() == static_cast<std::int64_t>(e["values"].size()));
    if (t.dtype == Dtype::BOOL) {
      for (std::int64_t i = 0; i < t.numel(); ++i)
        CHECK(int(t.data[static_cast<std::size_t>(i)]) == e["values"][static_cast<std::size_t>(i)].get<int>());
      continue;
    }
    for (std::int64_t i = 0; i < t.numel(); ++i) {
      const double want = e["values"][static_cast<std::size_t>(i)].get<double>();
      CHECK(t.to_double(i) == want);
      CHECK(std::signbit(t.to_double(i)) == (e["signbit"][static_cast<std::size_t>(i)].get<int>() == 1));
    }
  }
  // Into modules under the layer's prefix: the other layer's tensors are not this one's.
  BatchNorm1d<double> bn(3);
  bn.load_state_dict(file.tensors, "layer1.bn.");
  const auto& t = expected["tensors"];
  for (int c = 0; c < 3; ++c) {
    const auto k = static_cast<std::size_t>(c);
    CHECK(bn.weight()(c) == t["layer1.bn.weight"]["values"][k].get<double>());
    CHECK(bn.bias()(c) == t["layer1.bn.bias"]["values"][k].get<double>());
    CHECK(bn.running_mean()(c) == t["layer1.bn.running_mean"]["values"][k].get<double>());
    CHECK(bn.running_var()(c) == t["layer1.bn.running_var"]["values"][k].get<double>());
  }
  CHECK(std::signbit(bn.running_mean()(2)));
  CHECK(bn.num_batches_tracked() == t["layer1.bn.num_batches_tracked"]["values"][0].get<std::int64_t>());
  // The F64 bias holds 1e300, beyond float: a float module refuses the file, naming it.
  BatchNorm1d<float> f(3);
  expect_throw<std::invalid_argument>([&] { f.load_state_dict(file.tensors, "layer1.bn."); },
                                      "key \"layer1.bn.bias\": element 2 is 1.0000000000000001e+300, beyond the range of float");
  StateDict without_bias = file.tensors;
  without_bias.erase("layer1.bn.bias");
  const batchnorm::LoadResult r = f.load_state_dict(without_bias, "layer1.bn.", false);
  CHECK(r.missing_keys == std::vector<std::string>{"layer1.bn.bias"});
  for (int c = 0; c < 3; ++c)
    CHECK(f.weight()(c) == static_cast<float>(t["layer1.bn.weight"]["values"][static_cast<std::size_t>(c)].get<double>()));
}

TEST_CASE("safetensors: every F16 and BF16 value loads exactly", "[io][safetensors][python]") {
  const nlohmann::json expected = read_json(python_dir() + "/halves.json");
  const io::Safetensors file = io::read_safetensors(python_dir() + "/halves.safetensors");
  for (const char* name : {"f16", "bf16"}) {
    INFO(name);
    // Through a module's parameters: BatchNorm1d(65536).weight from the tensor.
    StateDict d{{"weight", file.tensors.at(name)}, {"bias", file.tensors.at(name)}};
    BatchNorm1d<float> bn(BatchNormOptions(65536).track_running_stats(false));
    bn.load_state_dict(d);
    const auto& want = expected[name];
    REQUIRE(want.size() == 65536);
    long nans = 0;
    for (std::size_t h = 0; h < 65536; ++h) {
      const float got = bn.weight()(static_cast<Eigen::Index>(h));
      if (want[h].is_null()) {
        nans += std::isnan(got) ? 1 : 0;
        continue;
      }
      if (bits_of(got) != want[h].get<std::uint32_t>()) FAIL_CHECK("pattern " << h << ": got " << got);
    }
    CHECK(nans == (std::string(name) == "f16" ? 2046 : 254));
  }
}

TEST_CASE("safetensors: the independent writer's bad files are refused with the reason", "[io][safetensors][python][errors]") {
  const nlohmann::json bad = read_json(python_dir() + "/bad.json");
  REQUIRE(bad.size() >= 20);
  for (const auto& [name, phrase] : bad.items()) {
    INFO(name);
    const std::string path = python_dir() + "/bad/" + name + ".safetensors";
    expect_throw<std::runtime_error>([&] { (void)io::read_safetensors(path); }, "batchnorm::io: " + path + ": ");
    expect_throw<std::runtime_error>([&] { (void)io::read_safetensors(path); }, phrase.get<std::string>());
  }
}

// ---------------------------------------------------------------------------------------------
// Files of other frameworks (tests/io/make_pytorch_state.py, make_onnx_cases.py; committed)

namespace {

template <class T, int R>
Eigen::Tensor<T, R, Eigen::RowMajor> tensor_of(const StateTensor& t) {
  REQUIRE(t.shape.size() == static_cast<std::size_t>(R));
  Eigen::array<Eigen::Index, R> dims;
  for (int a = 0; a < R; ++a) dims[static_cast<std::size_t>(a)] = static_cast<Eigen::Index>(t.shape[static_cast<std::size_t>(a)]);
  Eigen::Tensor<T, R, Eigen::RowMajor> out(dims);
  for (Eigen::Index k = 0; k < out.size(); ++k) out.data()[k] = static_cast<T>(t.to_double(k));
  return out;
}

}  // namespace

TEMPLATE_TEST_CASE("PyTorch's trained BatchNorm2d state: loaded, eval matches PyTorch", "[io][state][pytorch]", float, double) {
  using T = TestType;
  const io::Safetensors file = io::read_safetensors(std::string(BATCHNORM_TEST_DATA_DIR) + "/pytorch_bn2d.safetensors");
  BatchNorm2d<T> bn(4);
  const batchnorm::LoadResult r = bn.load_state_dict(file.tensors, "bn.");
  CHECK(r.missing_keys.empty());
  CHECK(bn.num_batches_tracked() == 3);
  bn.eval();
  const auto x = tensor_of<T, 4>(file.tensors.at("eval.input"));
  const Eigen::Tensor<T, 4, Eigen::RowMajor> y = bn.forward(x);
  const auto ref = tensor_of<double, 4>(file.tensors.at("eval.output_f64"));
  const auto torch_f32 = tensor_of<double, 4>(file.tensors.at("eval.output"));
  const double tol = std::is_same_v<T, float> ? kFloatTrainTol : kDoubleTol;
  double ours = 0, theirs = 0;
  for (Eigen::Index k = 0; k < y.size(); ++k) {
    ours = std::max(ours, rel_err(double(y.data()[k]), ref.data()[k]));
    theirs = std::max(theirs, rel_err(torch_f32.data()[k], ref.data()[k]));
  }
  INFO("worst relative error against PyTorch's float64 eval: ours " << ours << ", PyTorch float32 " << theirs);
  CHECK(ours <= tol);
  // The state in bfloat16 (module.to(torch.bfloat16)) loads as exactly PyTorch's widening.
  BatchNorm2d<T> half(4), widened(4);
  half.load_state_dict(file.tensors, "bf16.bn.");
  StateDict w;
  for (const char* name : {"weight", "bias", "running_mean", "running_var"})
    w[name] = file.tensors.at(std::string("bf16_as_f32.bn.") + name);
  w["num_batches_tracked"] = file.tensors.at("bf16.bn.num_batches_tracked");
  widened.load_state_dict(w);
  const std::vector<double> a = snapshot(half), b = snapshot(widened);
  REQUIRE(a.size() == b.size());
  for (std::size_t i = 0; i < a.size(); ++i) CHECK(bits_of(a[i]) == bits_of(b[i]));
}

TEMPLATE_TEST_CASE("ONNX's BatchNormalization operator tests with BatchNormOptions::onnx", "[io][conventions][onnx]", float,
                   double) {
  using T = TestType;
  const io::Safetensors file = io::read_safetensors(std::string(BATCHNORM_TEST_DATA_DIR) + "/onnx_batchnorm.safetensors");
  int cases = 0, training = 0;
  for (const auto& [key, value] : file.metadata) {
    const std::string suffix = ".training_mode";
    if (key.size() < suffix.size() || key.compare(key.size() - suffix.size(), suffix.size(), suffix) != 0) continue;
    const std::string name = key.substr(0, key.size() - suffix.size());
    INFO(name);
    ++cases;
    const bool train = value == "1";
    const double eps = std::stod(file.metadata.at(name + ".epsilon"));
    const double momentum_old = std::stod(file.metadata.at(name + ".momentum"));
    const auto x = tensor_of<T, 4>(file.tensors.at(name + ".x"));
    const auto C = x.dimension(1);
    // ONNX's momentum weighs the old value: ours is 1 - momentum.
    BatchNorm2d<T> bn(BatchNormOptions::onnx(C).eps(eps).momentum(1 - momentum_old));
    StateDict d{{"weight", file.tensors.at(name + ".scale")},
                {"bias", file.tensors.at(name + ".bias")},
                {"running_mean", file.tensors.at(name + ".input_mean")},
                {"running_var", file.tensors.at(name + ".input_var")}};
    const batchnorm::LoadResult r = bn.load_state_dict(d, "", false);
    CHECK(r.missing_keys == std::vector<std::string>{"num_batches_tracked"});
    bn.train(train);
    const Eigen::Tensor<T, 4, Eigen::RowMajor> y = bn.forward(x);
    const auto y_ref = tensor_of<double, 4>(file.tensors.at(name + ".y"));
    // ONNX's references are float32 (numpy): the bar is float's whatever T is.
    double worst = 0;
    for (Eigen::Index k = 0; k < y.size(); ++k) worst = std::max(worst, rel_err(double(y.data()[k]), y_ref.data()[k]));
    CHECK(worst <= kFloatTrainTol);
    if (!train) continue;
    ++training;
    const auto rm = tensor_of<double, 1>(file.tensors.at(name + ".running_mean"));
    const auto rv = tensor_of<double, 1>(file.tensors.at(name + ".running_var"));
    for (Eigen::Index c = 0; c < C; ++c) {
      CHECK(rel_err(double(bn.running_mean()(c)), rm(c)) <= kFloatTrainTol);
      CHECK(rel_err(double(bn.running_var()(c)), rv(c)) <= kFloatTrainTol);
    }
    // PyTorch's unbiased running variance misses ONNX's by the Bessel factor.
    BatchNorm2d<T> unbiased(BatchNormOptions::onnx(C).eps(eps).momentum(1 - momentum_old).running_var_unbiased(true));
    unbiased.load_state_dict(d, "", false);
    unbiased.forward(x);
    double miss = 0;
    for (Eigen::Index c = 0; c < C; ++c) miss = std::max(miss, rel_err(double(unbiased.running_var()(c)), rv(c)));
    CHECK(miss > 100 * kFloatTrainTol);
  }
  CHECK(cases == 4);
  CHECK(training == 2);
}
