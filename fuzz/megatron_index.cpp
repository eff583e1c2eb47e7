// Fuzz target: the Megatron indexed-dataset reader. The input is PREFIX.idx; PREFIX.bin is a
// fixed 4 KiB of tokens. A malformed index may be rejected only with a UserError; one that
// is accepted must let every sequence and document be read without going out of bounds.
#include "core/data/indexed_dataset.h"
#include "core/error.h"
#include "fuzz/scratch.h"

#include <algorithm>
#include <cstdint>
#include <string>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::filesystem::path& dir = sigma::fuzz::scratch_dir("megatron_index");
  static bool bin_written = [&] {
    std::string bin(4096, '\0');
    for (size_t i = 0; i < bin.size(); ++i) bin[i] = char(i * 37 % 251);
    sigma::fuzz::write_file(dir / "data.bin", bin);
    return true;
  }();
  (void)bin_written;
  sigma::fuzz::write_file(dir / "data.idx", {reinterpret_cast<const char*>(data), size});
  try {
    sigma::IndexedDataset dataset((dir / "data").string());
    int32_t tokens[64];
    for (int64_t i = 0; i < std::min<int64_t>(dataset.num_sequences(), 64); ++i) {
      int64_t n = std::min<int64_t>(dataset.sequence_length(i), 64);
      dataset.read(i, 0, n, tokens);
    }
    for (int64_t d = 0; d < std::min<int64_t>(dataset.num_documents(), 64); ++d) {
      int64_t n = std::min<int64_t>(dataset.document_length(d), 64);
      dataset.read_document(d, 0, n, tokens);
    }
  } catch (const sigma::UserError&) {
  }
  return 0;
}
