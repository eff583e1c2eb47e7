// Shared by the fuzz targets: a scratch directory per process for the files that the code
// under test reads (it takes paths, as users give it), removed at exit.
#pragma once

#include <fmt/format.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string_view>

namespace sigma::fuzz {

inline const std::filesystem::path& scratch_dir(const char* target) {
  struct Dir {
    std::filesystem::path path;
    ~Dir() {
      std::error_code ignored;
      std::filesystem::remove_all(path, ignored);
    }
  };
  static Dir dir{std::filesystem::temp_directory_path() /
                 fmt::format("sigma_fuzz_{}_{}", target, ::getpid())};
  std::filesystem::create_directories(dir.path);
  return dir.path;
}

inline void write_file(const std::filesystem::path& path, std::string_view bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), std::streamsize(bytes.size()));
  if (!out) std::abort();  // the scratch directory itself failing is no finding
}

}  // namespace sigma::fuzz
