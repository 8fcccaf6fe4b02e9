// Reader for the PyTorch BatchNorm reference data in tests/data/: case files
// (format bnref_v1), errors.txt (format bnerr_v1) and index.txt, as specified
// in shared/reference/README.md (sections 1, 2 and 4). Standard library only.
//
// Files are read token by token (`in >> token`); a token starting with '#'
// skips the rest of its line. Numbers are kept as double: float32 inputs are
// written as the exact float64 value, so converting them to float is exact.
// Any malformed input throws std::runtime_error naming the file and reason.
#pragma once

#include <cstddef>
#include <cstdint>
#include <fstream>
#include <locale>
#include <map>
#include <optional>
#include <set>
#include <sstream>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

namespace batchnorm_test {

/// A reference tensor; values in C-contiguous (row-major, PyTorch) order.
struct RefTensor {
  std::vector<std::int64_t> shape;
  std::vector<double> values;
  std::int64_t size() const {
    std::int64_t n = 1;
    for (const std::int64_t d : shape) n *= d;
    return n;
  }
  double operator[](std::size_t i) const { return values[i]; }
};

/// One case file: all records by name, plus the configuration keys typed.
struct ReferenceCase {
  std::map<std::string, std::string> keys;
  std::map<std::string, RefTensor> tensors;
  std::string name, module, dtype;
  std::int64_t num_features = 0, steps = 0;
  double eps = 0;
  std::optional<double> momentum;  // nullopt for "none" (cumulative average)
  bool affine = false, track_running_stats = false;
  double tol_y = 0, tol_stats = 0, tol_grad = 0;

  bool has_tensor(const std::string& tensor_name) const { return tensors.count(tensor_name) != 0; }
  const RefTensor& tensor(const std::string& tensor_name) const {
    const auto it = tensors.find(tensor_name);
    if (it == tensors.end()) throw std::runtime_error("reference case '" + name + "': no tensor '" + tensor_name + "'");
    return it->second;
  }
  const std::string& key(const std::string& key_name) const {
    const auto it = keys.find(key_name);
    if (it == keys.end()) throw std::runtime_error("reference case '" + name + "': no key '" + key_name + "'");
    return it->second;
  }
  inline std::int64_t key_int(const std::string& key_name) const;
};

/// One record of errors.txt: a module configuration and an input shape on
/// which PyTorch's forward raises; `message` is a substring of its message.
struct ErrorCase {
  std::string name, module;  // module: "BatchNorm1d" | "BatchNorm2d"
  std::int64_t num_features = 0;
  bool affine = false, track_running_stats = false;
  bool train = true;  // MODE train|eval
  std::vector<std::int64_t> shape;
  std::string message;
};

namespace detail {

/// Strict conversions of a whole token; `std::nullopt` if anything is left over.
template <class T>
std::optional<T> parse_number(const std::string& tok) {
  std::istringstream s(tok);
  s.imbue(std::locale::classic());
  T v{};
  if (!(s >> v) || s.peek() != std::char_traits<char>::eof()) return std::nullopt;
  return v;
}

/// Token stream over one file; every failure names the file.
class TokenReader {
 public:
  explicit TokenReader(const std::string& path) : path_(path), in_(path) {
    if (!in_) fail("cannot open file");
  }
  [[noreturn]] void fail(const std::string& reason) const { throw std::runtime_error(path_ + ": " + reason); }
  bool next(std::string& tok) {
    while (in_ >> tok) {
      if (tok[0] != '#') return true;
      std::string rest;
      std::getline(in_, rest);
    }
    return false;
  }
  std::string token(const std::string& what) {
    std::string tok;
    if (!next(tok)) fail("unexpected end of file, expected " + what);
    return tok;
  }
  double real(const std::string& what) { return convert<double>(token(what), what); }
  std::int64_t integer(const std::string& what) { return convert<long long>(token(what), what); }
  bool flag(const std::string& what) {
    const std::string tok = token(what);
    if (tok != "0" && tok != "1") fail(what + ": expected 0 or 1, got '" + tok + "'");
    return tok == "1";
  }
  template <class T>
  T convert(const std::string& tok, const std::string& what) const {
    const std::optional<T> v = parse_number<T>(tok);
    if (!v) fail(what + ": '" + tok + "' is not " + (std::is_integral_v<T> ? "an integer" : "a number"));
    return *v;
  }
  void expect_format(const std::string& format) {
    if (token("'format'") != "format" || token("format name") != format) fail("first record is not 'format " + format + "'");
  }
  void expect_eof() {
    std::string tok;
    if (next(tok)) fail("'" + tok + "' after 'end'");
  }
  std::vector<std::int64_t> shape(const std::string& what) {
    const std::int64_t rank = integer(what + " rank");
    if (rank < 0) fail(what + ": negative rank");
    std::vector<std::int64_t> dims;
    for (std::int64_t i = 0; i < rank; ++i) {
      dims.push_back(integer(what + " dimension"));
      if (dims.back() < 0) fail(what + ": negative dimension");
    }
    return dims;
  }

 private:
  std::string path_;
  std::ifstream in_;
};

/// True for `name` in `fixed` or `prefix` + decimal step index (x_0, mode_12).
inline bool is_known(const std::string& name, const std::set<std::string>& fixed, const std::set<std::string>& prefixes) {
  if (fixed.count(name) != 0) return true;
  const std::size_t us = name.rfind('_');
  return us != std::string::npos && us + 1 < name.size() && prefixes.count(name.substr(0, us + 1)) != 0 &&
         name.find_first_not_of("0123456789", us + 1) == std::string::npos;
}

}  // namespace detail

inline std::int64_t ReferenceCase::key_int(const std::string& key_name) const {
  const std::optional<long long> v = detail::parse_number<long long>(key(key_name));
  if (!v) throw std::runtime_error("reference case '" + name + "': key '" + key_name + "' is not an integer");
  return *v;
}

/// Reads one case file (format bnref_v1, README.md section 1).
inline ReferenceCase read_reference_case(const std::string& path) {
  static const std::set<std::string> fixed_keys = {
      "format", "name", "module", "num_features", "eps", "momentum", "affine", "track_running_stats", "dtype",
      "reference_dtype", "steps", "tol_y", "tol_stats", "tol_grad", "num_batches_tracked_init"};
  static const std::set<std::string> step_keys = {"mode_", "num_batches_tracked_", "backward_"};
  static const std::set<std::string> fixed_tensors = {"weight", "bias", "running_mean_init", "running_var_init"};
  static const std::set<std::string> step_tensors = {"x_",  "y_",  "running_mean_", "running_var_",
                                                     "dy_", "dx_", "dweight_",      "dbias_"};
  detail::TokenReader r(path);
  r.expect_format("bnref_v1");
  ReferenceCase c;
  c.keys["format"] = "bnref_v1";
  for (std::string tok = r.token("a record or 'end'"); tok != "end"; tok = r.token("a record or 'end'")) {
    const bool is_tensor = tok == "tensor";
    const std::string name = is_tensor ? r.token("tensor name") : tok;
    if (is_tensor ? !detail::is_known(name, fixed_tensors, step_tensors) : !detail::is_known(name, fixed_keys, step_keys))
      r.fail("unknown " + std::string(is_tensor ? "tensor '" : "record '") + name + "'");
    if (c.keys.count(name) != 0 || c.tensors.count(name) != 0) r.fail("duplicate record '" + name + "'");
    if (!is_tensor) {
      c.keys[name] = r.token("a value for key '" + name + "'");
      continue;
    }
    RefTensor t;
    t.shape = r.shape("tensor '" + name + "'");
    const std::int64_t n = t.size();
    for (std::int64_t i = 0; i < n; ++i)
      t.values.push_back(r.real("value " + std::to_string(i) + " of " + std::to_string(n) + " of tensor '" + name + "'"));
    c.tensors.emplace(name, std::move(t));
  }
  r.expect_eof();

  const auto get = [&](const std::string& k) -> const std::string& {
    const auto it = c.keys.find(k);
    if (it == c.keys.end()) r.fail("missing key '" + k + "'");
    return it->second;
  };
  const auto get_flag = [&](const std::string& k) {
    if (get(k) != "0" && get(k) != "1") r.fail("key '" + k + "': expected 0 or 1, got '" + get(k) + "'");
    return get(k) == "1";
  };
  c.name = get("name");
  c.module = get("module");
  if (c.module != "BatchNorm1d" && c.module != "BatchNorm2d") r.fail("unknown module '" + c.module + "'");
  c.dtype = get("dtype");
  if (c.dtype != "float32" && c.dtype != "float64") r.fail("unknown dtype '" + c.dtype + "'");
  c.num_features = r.convert<long long>(get("num_features"), "num_features");
  c.steps = r.convert<long long>(get("steps"), "steps");
  c.eps = r.convert<double>(get("eps"), "eps");
  if (get("momentum") != "none") c.momentum = r.convert<double>(get("momentum"), "momentum");
  c.affine = get_flag("affine");
  c.track_running_stats = get_flag("track_running_stats");
  c.tol_y = r.convert<double>(get("tol_y"), "tol_y");
  c.tol_stats = r.convert<double>(get("tol_stats"), "tol_stats");
  c.tol_grad = r.convert<double>(get("tol_grad"), "tol_grad");
  return c;
}

/// The case files listed in index.txt, resolved against the index file's directory.
inline std::vector<std::string> read_index(const std::string& index_path) {
  detail::TokenReader r(index_path);
  const std::size_t slash = index_path.rfind('/');
  const std::string dir = slash == std::string::npos ? std::string() : index_path.substr(0, slash + 1);
  std::vector<std::string> paths;
  for (std::string tok; r.next(tok);) paths.push_back(tok[0] == '/' ? tok : dir + tok);
  if (paths.empty()) r.fail("no case files listed");
  return paths;
}

/// Reads errors.txt (format bnerr_v1, README.md section 2).
inline std::vector<ErrorCase> read_error_cases(const std::string& path) {
  detail::TokenReader r(path);
  r.expect_format("bnerr_v1");
  std::vector<ErrorCase> cases;
  for (std::string tok = r.token("'error' or 'end'"); tok != "end"; tok = r.token("'error' or 'end'")) {
    if (tok != "error") r.fail("unknown record '" + tok + "', expected 'error' or 'end'");
    ErrorCase e;
    e.name = r.token("error case name");
    const std::string what = "error case '" + e.name + "'";
    e.module = r.token(what + " module");
    if (e.module != "BatchNorm1d" && e.module != "BatchNorm2d") r.fail(what + ": unknown module '" + e.module + "'");
    e.num_features = r.integer(what + " num_features");
    e.affine = r.flag(what + " affine");
    e.track_running_stats = r.flag(what + " track_running_stats");
    const std::string mode = r.token(what + " mode");
    if (mode != "train" && mode != "eval") r.fail(what + ": mode must be train or eval, got '" + mode + "'");
    e.train = mode == "train";
    e.shape = r.shape(what);
    const std::int64_t words = r.integer(what + " word count");
    if (words < 1) r.fail(what + ": empty message");
    for (std::int64_t i = 0; i < words; ++i) e.message += (i == 0 ? "" : " ") + r.token(what + " message word");
    cases.push_back(std::move(e));
  }
  r.expect_eof();
  return cases;
}

}  // namespace batchnorm_test
