// batchnorm::io: safetensors files of named tensors (a model's state), read and written.
// Needs nlohmann/json (Debian: nlohmann-json3-dev); link batchnorm::io. The core library does
// not include this header.
//
// The format (https://github.com/huggingface/safetensors, "Format"):
//   8 bytes      N, the header's length, an unsigned little-endian 64-bit integer
//   N bytes      the header: a UTF-8 JSON object
//                  {"name": {"dtype": "F32", "shape": [64], "data_offsets": [begin, end]}, ...,
//                   "__metadata__": {"key": "value", ...}}       (optional, strings only)
//                padded at its end with spaces
//   the rest     the data section: each tensor's bytes, little-endian, row-major, at
//                [begin, end) of the section
// What a reader accepts here (the reference implementation's rules): N at most 100,000,000
// and within the file; the header starts with '{', has no NUL byte, is valid UTF-8 and JSON,
// an object whose keys are unique, nested no deeper than the format needs (an object of
// objects of arrays); every tensor has a known dtype, a shape of non-negative integers and
// data_offsets begin <= end whose length is numel * dtype size; sorted by offset the tensors
// follow each other without gap or overlap from 0 to the end of the file. Anything else is a
// std::runtime_error naming the file and the problem.
#pragma once

#include "../config.hpp"

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <new>
#include <limits>
#include <map>
#include <set>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "../state.hpp"

BATCHNORM_BEGIN_NAMESPACE
namespace io {

/// A safetensors file's content: its tensors by name, and its "__metadata__" strings.
struct Safetensors {
  StateDict tensors;
  std::map<std::string, std::string> metadata;
};

/// The largest header a reader accepts, as the reference implementation (100 MB).
inline constexpr std::uint64_t kSafetensorsMaxHeader = 100'000'000;

namespace detail_safetensors {

[[noreturn]] inline void fail(const std::string& source, const std::string& problem) {
  throw std::runtime_error("batchnorm::io: " + source + ": " + problem);
}

/// v as JSON text for a message, at most 100 characters of it.
inline std::string excerpt(const nlohmann::json& v) {
  std::string text = v.dump();
  if (text.size() > 100) text = text.substr(0, 97) + "...";
  return text;
}

/// A non-negative JSON integer that fits in 64 bits, or fail.
inline std::uint64_t unsigned_of(const nlohmann::json& v, const std::string& source, const std::string& what) {
  if (!v.is_number_unsigned()) fail(source, what + " must be a non-negative integer, got " + excerpt(v));
  return v.get<std::uint64_t>();
}

/// a * b, or fail on overflow.
inline std::uint64_t checked_mul(std::uint64_t a, std::uint64_t b, const std::string& source, const std::string& what) {
  if (b != 0 && a > std::numeric_limits<std::uint64_t>::max() / b) fail(source, what + " overflows 64 bits");
  return a * b;
}

/// The JSON parser's callback: refuses a key repeated in one object (the parser would keep the
/// last silently), and a container nested deeper than a header's arrays (the top object at depth
/// 0, a tensor's object at 1, its shape at 2), which bounds the recursion of everything that
/// walks the parsed value afterwards. One set of keys per open object.
class HeaderRules {
 public:
  explicit HeaderRules(std::string source) : source_(std::move(source)) {}
  bool operator()(int depth, nlohmann::json::parse_event_t event, nlohmann::json& parsed) {
    using E = nlohmann::json::parse_event_t;
    if ((event == E::object_start || event == E::array_start) && depth > 2)
      fail(source_, "header nests objects or arrays deeper than a header has them (depth " + std::to_string(depth) + ")");
    if (event == E::object_start) open_.emplace_back();
    else if (event == E::object_end && !open_.empty()) open_.pop_back();
    else if (event == E::key && !open_.empty() && !open_.back().insert(parsed.get<std::string>()).second)
      fail(source_, "header: key " + parsed.dump() + " appears twice in one object");
    return true;
  }

 private:
  std::string source_;
  std::vector<std::set<std::string>> open_;
};

}  // namespace detail_safetensors

/// Parses a safetensors file held in memory, [bytes, bytes + size); `source` names it in error
/// messages. Copies the tensors out (the buffer may go away).
inline Safetensors parse_safetensors(const unsigned char* bytes, std::size_t size, const std::string& source = "<memory>") {
  using detail_safetensors::fail;
  if (size < 8) fail(source, "file of " + std::to_string(size) + " bytes, shorter than the 8-byte header length");
  const auto n = detail::load_le<std::uint64_t>(bytes);
  if (n > kSafetensorsMaxHeader)
    fail(source, "header length " + std::to_string(n) + " is over the limit of " + std::to_string(kSafetensorsMaxHeader) +
                     " bytes");
  if (n > size - 8)
    fail(source, "header length " + std::to_string(n) + " runs past the end of the file (" + std::to_string(size) +
                     " bytes)");
  const unsigned char* header = bytes + 8;
  if (n == 0 || header[0] != '{') fail(source, "header does not start with '{'");
  // The JSON parser stops at a NUL as at the end of its input: the rest would go unchecked.
  if (std::memchr(header, 0, static_cast<std::size_t>(n)) != nullptr) fail(source, "header contains a NUL byte");
  nlohmann::json json;
  try {
    json = nlohmann::json::parse(header, header + n, detail_safetensors::HeaderRules(source));
  } catch (const nlohmann::json::exception& e) {
    fail(source, std::string("header is not valid UTF-8 JSON: ") + e.what());
  } catch (const std::bad_alloc&) {
    fail(source, "out of memory parsing a header of " + std::to_string(n) + " bytes");
  }
  if (!json.is_object()) fail(source, "header is not a JSON object");

  const std::uint64_t data_size = size - 8 - n;
  const unsigned char* data = header + n;
  Safetensors out;
  struct Span {
    std::uint64_t begin, end;
    const std::string* name;
  };
  std::vector<Span> spans;
  for (const auto& [name, info] : json.items()) {
    if (name == "__metadata__") {
      if (!info.is_object()) fail(source, "__metadata__ must be an object of strings, got " + detail_safetensors::excerpt(info));
      for (const auto& [key, value] : info.items()) {
        if (!value.is_string()) fail(source, "__metadata__ \"" + key + "\" must be a string, got " + detail_safetensors::excerpt(value));
        out.metadata.emplace(key, value.get<std::string>());
      }
      continue;
    }
    const std::string what = "tensor \"" + name + "\"";
    if (!info.is_object()) fail(source, what + " must be an object, got " + detail_safetensors::excerpt(info));
    const auto dtype_it = info.find("dtype"), shape_it = info.find("shape"), offsets_it = info.find("data_offsets");
    if (dtype_it == info.end() || shape_it == info.end() || offsets_it == info.end())
      fail(source, what + " needs dtype, shape and data_offsets, got " + detail_safetensors::excerpt(info));
    if (!dtype_it->is_string()) fail(source, what + ": dtype must be a string, got " + detail_safetensors::excerpt(*dtype_it));
    const auto dtype = dtype_from_name(dtype_it->get<std::string>());
    if (!dtype) fail(source, what + ": unknown dtype " + detail_safetensors::excerpt(*dtype_it));
    if (!shape_it->is_array()) fail(source, what + ": shape must be an array, got " + detail_safetensors::excerpt(*shape_it));
    StateTensor t;
    t.dtype = *dtype;
    for (const auto& d : *shape_it) {
      const std::uint64_t extent = detail_safetensors::unsigned_of(d, source, what + ": a shape entry");
      if (extent > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max()))
        fail(source, what + ": shape entry " + std::to_string(extent) + " is too large");
      t.shape.push_back(static_cast<std::int64_t>(extent));
    }
    const std::int64_t numel = t.numel();  // the count StateDict users see, 0 if any extent is
    if (numel < 0) fail(source, what + ": the element count overflows 64 bits");
    const std::uint64_t nbytes = detail_safetensors::checked_mul(static_cast<std::uint64_t>(numel), dtype_size(*dtype), source,
                                                                 what + ": the byte count");
    if (!offsets_it->is_array() || offsets_it->size() != 2)
      fail(source, what + ": data_offsets must be [begin, end], got " + detail_safetensors::excerpt(*offsets_it));
    const std::uint64_t begin = detail_safetensors::unsigned_of((*offsets_it)[0], source, what + ": data_offsets begin");
    const std::uint64_t end = detail_safetensors::unsigned_of((*offsets_it)[1], source, what + ": data_offsets end");
    if (begin > end) fail(source, what + ": data_offsets [" + std::to_string(begin) + ", " + std::to_string(end) + "] run backwards");
    if (end - begin != nbytes)
      fail(source, what + ": data_offsets [" + std::to_string(begin) + ", " + std::to_string(end) + "] hold " +
                       std::to_string(end - begin) + " bytes, its dtype and shape need " + std::to_string(nbytes));
    if (end > data_size)
      fail(source, what + ": data_offsets end " + std::to_string(end) + " is past the data section (" +
                       std::to_string(data_size) + " bytes)");
    const auto inserted = out.tensors.emplace(name, std::move(t));
    spans.push_back({begin, end, &inserted.first->first});
  }
  // Sorted by offset, the tensors tile the data section exactly.
  std::sort(spans.begin(), spans.end(),
            [](const Span& a, const Span& b) { return a.begin != b.begin ? a.begin < b.begin : a.end < b.end; });
  std::uint64_t at = 0;
  for (const Span& s : spans) {
    if (s.begin != at)
      fail(source, "tensor \"" + *s.name + "\" begins at " + std::to_string(s.begin) + ", expected " + std::to_string(at) +
                       (s.begin < at ? " (it overlaps the tensor before it)" : " (a gap before it)"));
    at = s.end;
  }
  if (at != data_size)
    fail(source, "the tensors end at byte " + std::to_string(at) + " of a data section of " + std::to_string(data_size) +
                     " bytes");
  for (const Span& s : spans) {
    std::vector<unsigned char>& dst = out.tensors[*s.name].data;
    dst.assign(data + s.begin, data + s.end);
  }
  return out;
}

/// Reads the safetensors file at `path` (see parse_safetensors); the whole file is held in
/// memory while it is parsed.
inline Safetensors read_safetensors(const std::string& path) {
  std::error_code error;
  if (!std::filesystem::is_regular_file(path, error))
    detail_safetensors::fail(path, error ? "cannot open for reading: " + error.message() : "cannot open for reading: not a regular file");
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  if (!in) detail_safetensors::fail(path, "cannot open for reading");
  const std::streamoff size = in.tellg();
  if (size < 0) detail_safetensors::fail(path, "cannot tell its size");
  std::vector<unsigned char> bytes;
  try {
    bytes.resize(static_cast<std::size_t>(size));
  } catch (const std::exception&) {  // std::bad_alloc, std::length_error
    detail_safetensors::fail(path, "cannot hold its " + std::to_string(size) + " bytes in memory");
  }
  in.seekg(0);
  if (!in.read(reinterpret_cast<char*>(bytes.data()), static_cast<std::streamsize>(size)))
    detail_safetensors::fail(path, "read error");
  return parse_safetensors(bytes.data(), bytes.size(), path);
}

/// The bytes of a safetensors file holding `tensors` and `metadata`. The data section starts at
/// a multiple of 8 (the header is padded with spaces); tensors are laid out by element size,
/// largest first, then by name, so each starts at a multiple of its element size. Throws
/// std::invalid_argument if a tensor's byte count does not match its dtype and shape, a shape
/// has a negative entry, a name is "__metadata__" or not valid UTF-8, or the header would be
/// longer than a reader accepts (kSafetensorsMaxHeader).
inline std::vector<unsigned char> serialize_safetensors(const StateDict& tensors,
                                                        const std::map<std::string, std::string>& metadata = {}) {
  constexpr const char* op = "batchnorm::io::serialize_safetensors: ";
  std::vector<const StateDict::value_type*> order;
  for (const auto& entry : tensors) {
    const StateTensor& t = entry.second;
    const std::int64_t numel = t.numel();
    if (numel < 0) throw std::invalid_argument(op + ("tensor \"" + entry.first + "\" has an invalid shape"));
    if (t.data.size() != static_cast<std::uint64_t>(numel) * dtype_size(t.dtype))
      throw std::invalid_argument(op + ("tensor \"" + entry.first + "\" holds " + std::to_string(t.data.size()) +
                                        " bytes, its dtype and shape need " +
                                        std::to_string(static_cast<std::uint64_t>(numel) * dtype_size(t.dtype))));
    if (entry.first == "__metadata__") throw std::invalid_argument(op + std::string("a tensor may not be named __metadata__"));
    order.push_back(&entry);
  }
  std::stable_sort(order.begin(), order.end(), [](const auto* a, const auto* b) {
    return dtype_size(a->second.dtype) > dtype_size(b->second.dtype);
  });
  nlohmann::json header = nlohmann::json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  std::uint64_t at = 0;
  for (const auto* entry : order) {
    const StateTensor& t = entry->second;
    const std::uint64_t end = at + t.data.size();
    header[entry->first] = {{"dtype", dtype_name(t.dtype)}, {"shape", t.shape}, {"data_offsets", {at, end}}};
    at = end;
  }
  std::string text;
  try {
    text = header.dump();
  } catch (const nlohmann::json::exception& e) {
    throw std::invalid_argument(op + std::string("a name or metadata string is not valid UTF-8: ") + e.what());
  }
  text.append((8 - text.size() % 8) % 8, ' ');
  if (text.size() > kSafetensorsMaxHeader)
    throw std::invalid_argument(op + ("the header would be " + std::to_string(text.size()) + " bytes, over the limit of " +
                                      std::to_string(kSafetensorsMaxHeader)));
  std::vector<unsigned char> out(8 + text.size());
  detail::store_le(static_cast<std::uint64_t>(text.size()), out.data());
  std::copy(text.begin(), text.end(), out.begin() + 8);
  out.reserve(out.size() + at);
  for (const auto* entry : order) out.insert(out.end(), entry->second.data.begin(), entry->second.data.end());
  return out;
}

/// Writes `tensors` and `metadata` to `path` as serialize_safetensors lays them out. Writes
/// `path` + ".partial" first (replacing a file of that name) and renames it over `path` at the
/// end, so that a failed write leaves an existing `path` as it was (the data reach the disk when
/// the system flushes them: no fsync). Two writers of one path at a time are not supported.
/// std::runtime_error naming the file if it cannot be written.
inline void write_safetensors(const std::string& path, const StateDict& tensors,
                              const std::map<std::string, std::string>& metadata = {}) {
  const std::vector<unsigned char> bytes = serialize_safetensors(tensors, metadata);
  const std::string temporary = path + ".partial";
  {
    std::ofstream out(temporary, std::ios::binary | std::ios::trunc);
    if (!out) detail_safetensors::fail(temporary, "cannot open for writing");
    out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
    out.close();
    if (!out) {
      std::remove(temporary.c_str());
      detail_safetensors::fail(temporary, "write error");
    }
  }
  if (std::rename(temporary.c_str(), path.c_str()) != 0) {
    std::remove(temporary.c_str());
    detail_safetensors::fail(path, "cannot rename " + temporary + " to it");
  }
}

}  // namespace io
BATCHNORM_END_NAMESPACE
