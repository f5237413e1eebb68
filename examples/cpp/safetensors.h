#pragma once
// A small reader and writer of safetensors files (the format of the project's weights and of
// the example's inputs), for libtorch programs that have no Python at hand.
//
// The format: an 8-byte little-endian header length N, N bytes of JSON
//   {"<name>": {"dtype": "F32", "shape": [2, 3], "data_offsets": [begin, end]}, ...,
//    "__metadata__": {"<key>": "<value>", ...}}
// then the tensors' bytes, little-endian, offsets counted from the end of the header.
// Only what that header needs is parsed: objects, arrays, strings, integers.
#include <ATen/ATen.h>

#include <cstdint>
#include <cstring>
#include <fstream>
#include <map>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace safetensors {

struct File {
  std::map<std::string, at::Tensor> tensors;
  std::map<std::string, std::string> metadata;
};

namespace detail {

inline const std::vector<std::pair<std::string, at::ScalarType>>& dtypes() {
  static const std::vector<std::pair<std::string, at::ScalarType>> t = {
      {"F64", at::kDouble}, {"F32", at::kFloat}, {"F16", at::kHalf}, {"BF16", at::kBFloat16},
      {"I64", at::kLong},   {"I32", at::kInt},   {"I16", at::kShort}, {"I8", at::kChar},
      {"U8", at::kByte},    {"BOOL", at::kBool}};
  return t;
}

// A JSON value of the header: an object, an array, a string or an integer.
struct Value {
  enum Kind { Object, Array, String, Integer } kind = Integer;
  std::vector<std::pair<std::string, Value>> members;  // Object
  std::vector<Value> items;                            // Array
  std::string str;                                     // String
  int64_t num = 0;                                     // Integer

  const Value& at(const std::string& key) const {
    for (const auto& m : members)
      if (m.first == key) return m.second;
    throw std::runtime_error("safetensors: header entry has no \"" + key + "\"");
  }
};

class Parser {
 public:
  explicit Parser(const std::string& s) : s_(s) {}

  Value parse() {
    Value v = value();
    space();
    if (i_ != s_.size()) fail("trailing characters");
    return v;
  }

 private:
  [[noreturn]] void fail(const std::string& what) const {
    throw std::runtime_error("safetensors: bad header JSON at byte " + std::to_string(i_) + ": " + what);
  }
  void space() {
    while (i_ < s_.size() && std::strchr(" \t\r\n", s_[i_])) ++i_;
  }
  char peek() {
    space();
    if (i_ >= s_.size()) fail("unexpected end");
    return s_[i_];
  }
  void expect(char c) {
    if (peek() != c) fail(std::string("expected '") + c + "'");
    ++i_;
  }
  // After an opening bracket: items separated by commas up to `close`, each read by `item`.
  template <class F>
  void sequence(char close, F item) {
    ++i_;
    if (peek() == close) {
      ++i_;
      return;
    }
    for (;;) {
      item();
      if (peek() != ',') break;
      ++i_;
    }
    expect(close);
  }
  Value value() {
    const char c = peek();
    Value v;
    if (c == '{') {
      v.kind = Value::Object;
      sequence('}', [&] {
        std::string key = string();
        expect(':');
        v.members.emplace_back(std::move(key), value());
      });
      return v;
    }
    if (c == '[') {
      v.kind = Value::Array;
      sequence(']', [&] { v.items.push_back(value()); });
      return v;
    }
    if (c == '"') {
      v.kind = Value::String;
      v.str = string();
      return v;
    }
    if (c == '-' || (c >= '0' && c <= '9')) {
      size_t used = 0;
      v.num = std::stoll(s_.substr(i_, 24), &used);
      i_ += used;
      return v;
    }
    fail(std::string("unexpected '") + c + "'");
  }
  std::string string() {
    expect('"');
    std::string out;
    while (i_ < s_.size() && s_[i_] != '"') {
      char c = s_[i_++];
      if (c == '\\') {
        if (i_ >= s_.size()) fail("unfinished escape");
        const char e = s_[i_++];
        const char* from = "\"\\/bfnrt";
        const char* to = "\"\\/\b\f\n\r\t";
        const char* at = std::strchr(from, e);
        if (e == 'u' || at == nullptr) fail("unsupported escape");  // names and metadata here are ASCII
        c = to[at - from];
      }
      out += c;
    }
    expect('"');
    return out;
  }

  const std::string& s_;
  size_t i_ = 0;
};

inline std::string quoted(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') out += '\\';
    out += c;
  }
  return out + "\"";
}

}  // namespace detail

// Reads every tensor (as a CPU tensor that owns its memory) and the metadata of `path`.
inline File load(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw std::runtime_error("safetensors: cannot open " + path);
  unsigned char len8[8];
  if (!f.read(reinterpret_cast<char*>(len8), 8)) throw std::runtime_error("safetensors: " + path + " is too short");
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | len8[i];
  if (n > (uint64_t(100) << 20)) throw std::runtime_error("safetensors: header of " + path + " is implausibly long");
  std::string header(n, '\0');
  if (!f.read(&header[0], static_cast<std::streamsize>(n)))
    throw std::runtime_error("safetensors: " + path + " ends inside its header");
  std::vector<char> data((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());

  const detail::Value root = detail::Parser(header).parse();
  if (root.kind != detail::Value::Object) throw std::runtime_error("safetensors: header is not a JSON object");
  File out;
  for (const auto& [name, entry] : root.members) {
    if (name == "__metadata__") {
      for (const auto& [k, v] : entry.members) out.metadata[k] = v.str;
      continue;
    }
    const std::string& dt = entry.at("dtype").str;
    at::ScalarType st = at::kFloat;
    bool known = false;
    for (const auto& [tag, t] : detail::dtypes())
      if (tag == dt) st = t, known = true;
    if (!known) throw std::runtime_error("safetensors: tensor " + name + " has unsupported dtype " + dt);
    std::vector<int64_t> shape;
    for (const auto& d : entry.at("shape").items) shape.push_back(d.num);
    const auto& off = entry.at("data_offsets").items;
    if (off.size() != 2) throw std::runtime_error("safetensors: tensor " + name + ": data_offsets must be [begin, end]");
    const int64_t begin = off[0].num, end = off[1].num;
    at::Tensor t = at::empty(shape, at::TensorOptions().dtype(st));
    const int64_t bytes = t.numel() * static_cast<int64_t>(t.element_size());
    if (begin < 0 || end - begin != bytes || end > static_cast<int64_t>(data.size()))
      throw std::runtime_error("safetensors: tensor " + name + ": data_offsets [" + std::to_string(begin) + ", " +
                               std::to_string(end) + "] do not hold " + std::to_string(bytes) + " bytes of the " +
                               std::to_string(data.size()) + " in the file");
    if (bytes) std::memcpy(t.data_ptr(), data.data() + begin, static_cast<size_t>(bytes));
    out.tensors.emplace(name, t);
  }
  return out;
}

// Writes `tensors` (copied to contiguous CPU memory) and `metadata` to `path`.
inline void save(const std::string& path, const std::map<std::string, at::Tensor>& tensors,
                 const std::map<std::string, std::string>& metadata = {}) {
  std::string header = "{";
  std::vector<at::Tensor> parts;
  int64_t offset = 0;
  if (!metadata.empty()) {
    header += "\"__metadata__\":{";
    bool first = true;
    for (const auto& [k, v] : metadata) {
      header += (first ? "" : ",") + detail::quoted(k) + ":" + detail::quoted(v);
      first = false;
    }
    header += "}";
  }
  for (const auto& [name, t0] : tensors) {
    const at::Tensor t = t0.detach().to(at::kCPU).contiguous();
    std::string tag;
    for (const auto& [s, st] : detail::dtypes())
      if (st == t.scalar_type()) tag = s;
    if (tag.empty()) throw std::runtime_error("safetensors: cannot write dtype of tensor " + name);
    std::string shape;
    for (int64_t i = 0; i < t.dim(); ++i) shape += (i ? "," : "") + std::to_string(t.size(i));
    const int64_t bytes = t.numel() * static_cast<int64_t>(t.element_size());
    header += std::string(header.size() > 1 ? "," : "") + detail::quoted(name) + ":{\"dtype\":\"" + tag +
              "\",\"shape\":[" + shape + "],\"data_offsets\":[" + std::to_string(offset) + "," +
              std::to_string(offset + bytes) + "]}";
    offset += bytes;
    parts.push_back(t);
  }
  header += "}";
  header.append((8 - header.size() % 8) % 8, ' ');  // the data starts 8-byte aligned
  std::ofstream f(path, std::ios::binary);
  if (!f) throw std::runtime_error("safetensors: cannot write " + path);
  uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) f.put(static_cast<char>((n >> (8 * i)) & 0xff));
  f.write(header.data(), static_cast<std::streamsize>(header.size()));
  for (const auto& t : parts)
    f.write(static_cast<const char*>(t.data_ptr()), static_cast<std::streamsize>(t.numel() * t.element_size()));
  if (!f) throw std::runtime_error("safetensors: writing " + path + " failed");
}

}  // namespace safetensors
