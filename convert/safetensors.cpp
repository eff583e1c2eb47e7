#include "convert/safetensors.h"

#include "core/error.h"

#include <nlohmann/json.hpp>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>

namespace sigma::safetensors {

namespace fs = std::filesystem;
using nlohmann::json;

const char* dtype_name(DType dtype) {
  switch (dtype) {
    case DType::kF32: return "F32";
    case DType::kBF16: return "BF16";
    case DType::kF16: return "F16";
  }
  return "?";
}

namespace {

size_t element_bytes(DType dtype) { return dtype == DType::kF32 ? 4 : 2; }

int64_t numel(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

// fp32 -> bf16, rounding to nearest even (NaN stays a quiet NaN), as torch's .to(bfloat16).
uint16_t to_bf16(float value) {
  uint32_t bits;
  std::memcpy(&bits, &value, 4);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return uint16_t((bits >> 16) | 0x40);
  bits += 0x7fffu + ((bits >> 16) & 1u);
  return uint16_t(bits >> 16);
}

float from_bf16(uint16_t half) {
  uint32_t bits = uint32_t(half) << 16;
  float value;
  std::memcpy(&value, &bits, 4);
  return value;
}

float from_f16(uint16_t h) {
  uint32_t sign = uint32_t(h & 0x8000u) << 16, exponent = (h >> 10) & 0x1f, mantissa = h & 0x3ffu;
  uint32_t bits;
  if (exponent == 0x1f) {
    bits = sign | 0x7f800000u | (mantissa << 13);
  } else if (exponent != 0) {
    bits = sign | ((exponent + 112) << 23) | (mantissa << 13);
  } else if (mantissa == 0) {
    bits = sign;
  } else {  // subnormal: normalise
    int shift = 0;
    while (!(mantissa & 0x400u)) mantissa <<= 1, ++shift;
    bits = sign | (uint32_t(113 - shift) << 23) | ((mantissa & 0x3ffu) << 13);
  }
  float value;
  std::memcpy(&value, &bits, 4);
  return value;
}

void write_file(const fs::path& path, const std::vector<const TensorToWrite*>& tensors,
                DType dtype) {
  json header = json::object();
  header["__metadata__"] = {{"format", "pt"}};
  uint64_t offset = 0;
  for (const TensorToWrite* t : tensors) {
    uint64_t bytes = uint64_t(numel(t->shape)) * element_bytes(dtype);
    header[t->name] = {{"dtype", dtype_name(dtype)},
                       {"shape", t->shape},
                       {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  uint64_t length = text.size();
  unsigned char length_le[8];
  for (int i = 0; i < 8; ++i) length_le[i] = static_cast<unsigned char>(length >> (8 * i));
  out.write(reinterpret_cast<const char*>(length_le), 8);
  out.write(text.data(), std::streamsize(text.size()));
  std::vector<uint16_t> halves;
  for (const TensorToWrite* t : tensors) {
    int64_t n = numel(t->shape);
    if (dtype == DType::kF32) {
      out.write(reinterpret_cast<const char*>(t->data), std::streamsize(n * 4));
    } else {
      halves.resize(size_t(n));
      for (int64_t i = 0; i < n; ++i) halves[size_t(i)] = to_bf16(t->data[i]);
      out.write(reinterpret_cast<const char*>(halves.data()), std::streamsize(n * 2));
    }
  }
  if (!out) fail("cannot write {}", path.string());
}

std::vector<char> read_bytes(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail("cannot read {}", path.string());
  return std::vector<char>(std::istreambuf_iterator<char>(in), {});
}

void read_file(const fs::path& path, std::map<std::string, TensorRead>& into) {
  std::vector<char> bytes = read_bytes(path);
  auto bad = [&](const std::string& what) -> void {
    fail("{}: not a safetensors file ({})", path.string(), what);
  };
  if (bytes.size() < 8) bad("shorter than 8 bytes");
  uint64_t length = 0;
  for (int i = 0; i < 8; ++i)
    length |= uint64_t(static_cast<unsigned char>(bytes[size_t(i)])) << (8 * i);
  if (length > bytes.size() - 8) bad("header length past the end");
  json header = json::parse(bytes.begin() + 8, bytes.begin() + 8 + int64_t(length), nullptr, false);
  if (!header.is_object()) bad("header is not a JSON object");
  size_t data_begin = 8 + length;
  for (const auto& [name, info] : header.items()) {
    if (name == "__metadata__") continue;
    TensorRead t;
    std::string dtype = info.value("dtype", "");
    if (dtype == "F32")
      t.stored = DType::kF32;
    else if (dtype == "BF16")
      t.stored = DType::kBF16;
    else if (dtype == "F16")
      t.stored = DType::kF16;
    else
      fail("{}: tensor {} has dtype {}; allowed: F32, BF16, F16", path.string(), name, dtype);
    t.shape = info.at("shape").get<std::vector<int64_t>>();
    auto offsets = info.at("data_offsets").get<std::vector<uint64_t>>();
    int64_t n = numel(t.shape);
    if (offsets.size() != 2 || offsets[1] - offsets[0] != uint64_t(n) * element_bytes(t.stored) ||
        data_begin + offsets[1] > bytes.size())
      bad("tensor " + name + " has bad data_offsets");
    const char* src = bytes.data() + data_begin + offsets[0];
    t.values.resize(size_t(n));
    for (int64_t i = 0; i < n; ++i) {
      if (t.stored == DType::kF32) {
        std::memcpy(&t.values[size_t(i)], src + 4 * i, 4);
      } else {
        uint16_t h;
        std::memcpy(&h, src + 2 * i, 2);
        t.values[size_t(i)] = t.stored == DType::kBF16 ? from_bf16(h) : from_f16(h);
      }
    }
    into[name] = std::move(t);
  }
}

}  // namespace

int64_t write_sharded(const std::string& dir, const std::vector<TensorToWrite>& tensors,
                      DType dtype, int64_t max_shard_bytes) {
  std::vector<std::vector<const TensorToWrite*>> shards(1);
  int64_t shard_bytes = 0, total = 0;
  for (const TensorToWrite& t : tensors) {
    int64_t bytes = numel(t.shape) * int64_t(element_bytes(dtype));
    if (shard_bytes > 0 && shard_bytes + bytes > max_shard_bytes) {
      shards.emplace_back();
      shard_bytes = 0;
    }
    shards.back().push_back(&t);
    shard_bytes += bytes;
    total += bytes;
  }
  if (shards.size() == 1) {
    write_file(fs::path(dir) / "model.safetensors", shards[0], dtype);
    return total;
  }
  json weight_map = json::object();
  for (size_t i = 0; i < shards.size(); ++i) {
    std::string file = fmt::format("model-{:05}-of-{:05}.safetensors", i + 1, shards.size());
    write_file(fs::path(dir) / file, shards[i], dtype);
    for (const TensorToWrite* t : shards[i]) weight_map[t->name] = file;
  }
  json index = {{"metadata", {{"total_size", total}}}, {"weight_map", weight_map}};
  std::ofstream(fs::path(dir) / "model.safetensors.index.json") << index.dump(2) << "\n";
  return total;
}

std::map<std::string, TensorRead> read_dir(const std::string& dir) {
  std::map<std::string, TensorRead> tensors;
  fs::path single = fs::path(dir) / "model.safetensors";
  fs::path index_path = fs::path(dir) / "model.safetensors.index.json";
  if (fs::exists(index_path)) {
    std::ifstream in(index_path);
    json index = json::parse(in, nullptr, false);
    if (!index.is_object() || !index.contains("weight_map") || !index["weight_map"].is_object())
      fail("{}: not a safetensors index (no weight_map object)", index_path.string());
    std::set<std::string> files;
    for (const auto& [name, file] : index["weight_map"].items())
      files.insert(file.get<std::string>());
    for (const std::string& file : files) read_file(fs::path(dir) / file, tensors);
  } else if (fs::exists(single)) {
    read_file(single, tensors);
  } else {
    fail("{}: no model.safetensors or model.safetensors.index.json", dir);
  }
  return tensors;
}

}  // namespace sigma::safetensors
