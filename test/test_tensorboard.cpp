// TensorBoard event files: CRC-32C and the TFRecord framing of every record. That TensorBoard
// itself reads them is test/integration/tensorboard.sh.
#include "core/train/tensorboard.h"

#include <doctest/doctest.h>
#include <fmt/format.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

using namespace sigma;
namespace fs = std::filesystem;

namespace {

uint32_t unmask(uint32_t masked) {
  uint32_t rotated = masked - 0xA282EAD8u;
  return (rotated >> 17) | (rotated << 15);
}

template <typename T>
T read_le(const std::string& bytes, size_t offset) {
  T value;
  std::memcpy(&value, bytes.data() + offset, sizeof(T));
  return value;
}

}  // namespace

TEST_CASE("tensorboard: crc32c matches the Castagnoli check value") {
  CHECK(crc32c("123456789", 9) == 0xE3069283u);
  CHECK(crc32c("", 0) == 0u);
}

TEST_CASE("tensorboard: every record is framed by its length and masked CRC-32Cs") {
  fs::path dir = fs::temp_directory_path() / fmt::format("sigma_test_tb_{}", ::getpid());
  fs::remove_all(dir);
  fs::create_directories(dir);
  std::string path;
  {
    TensorBoardWriter writer(dir.string(), 7);
    writer.scalars(7, {{"loss", 2.5}, {"moe/l1/max_dev_pct", 30.0}});
    path = writer.path();
  }
  CHECK(fs::path(path).filename().string().starts_with("events.out.tfevents."));
  std::ifstream in(path, std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::vector<std::string> records;
  size_t at = 0;
  while (at < bytes.size()) {
    REQUIRE(at + 12 <= bytes.size());
    uint64_t length = read_le<uint64_t>(bytes, at);
    CHECK(unmask(read_le<uint32_t>(bytes, at + 8)) == crc32c(bytes.data() + at, 8));
    REQUIRE(at + 12 + length + 4 <= bytes.size());
    std::string data = bytes.substr(at + 12, length);
    CHECK(unmask(read_le<uint32_t>(bytes, at + 12 + length)) == crc32c(data.data(), data.size()));
    records.push_back(data);
    at += 12 + length + 4;
  }
  // file_version, the session START of a resumed run, then the scalars.
  REQUIRE(records.size() == 3);
  CHECK(records[0].find("brain.Event:2") != std::string::npos);
  CHECK(records[1].back() == 1);  // SessionLog.status = START, the last byte of the event
  CHECK(records[2].find("moe/l1/max_dev_pct") != std::string::npos);
  float value = 0;
  size_t tag = records[2].find("loss");
  REQUIRE(records[2][tag + 4] == 0x15);  // simple_value: field 2, fixed32
  std::memcpy(&value, records[2].data() + tag + 5, 4);
  CHECK(value == 2.5f);
  fs::remove_all(dir);
}
