// Megatron-LM indexed dataset (MMIDIDX): PREFIX.bin holds tokens, PREFIX.idx the index.
//
// .idx layout (little-endian): magic "MMIDIDX\0\0" (9 bytes), u64 version = 1, u8 dtype code
// (1 u8, 2 i8, 3 i16, 4 i32, 5 i64, 6 f64, 7 f32, 8 u16), u64 sequence count, u64 document
// index count, i32 sequence lengths[], i64 sequence byte offsets[], i64 document indices[]
// (the first sequence of each document, then the sequence count). Files written here load
// in Megatron-LM and the other way round. Megatron's multimodal variant (a trailing array of
// sequence modes) is not supported: it holds no token data.
#pragma once

#include <cstdint>
#include <fstream>
#include <string>
#include <vector>

namespace sigma {

// Reads a dataset through memory maps of both files. Any malformed file throws UserError
// naming it and what is wrong; every offset is checked once here, so reads need no checks.
class IndexedDataset {
 public:
  explicit IndexedDataset(const std::string& prefix);
  ~IndexedDataset();
  IndexedDataset(const IndexedDataset&) = delete;
  IndexedDataset& operator=(const IndexedDataset&) = delete;

  int64_t num_sequences() const { return num_sequences_; }
  int64_t num_documents() const { return num_doc_indices_ - 1; }
  int64_t sequence_length(int64_t i) const;
  int64_t num_tokens() const { return total_tokens_; }
  // Copies `count` tokens of sequence i starting at `offset` into out (widened to int32).
  void read(int64_t i, int64_t offset, int64_t count, int32_t* out) const;

  // A document is the run of sequences [document_begin(d), document_begin(d + 1)).
  int64_t document_begin(int64_t d) const;
  int64_t document_length(int64_t d) const;  // tokens over all its sequences
  // Like read(), over a document's tokens (which may span several sequences).
  void read_document(int64_t d, int64_t offset, int64_t count, int32_t* out) const;

  const std::string& prefix() const { return prefix_; }

 private:
  int64_t sequence_pointer(int64_t i) const;

  std::string prefix_;
  int dtype_code_ = 0;
  size_t token_bytes_ = 0;
  int64_t num_sequences_ = 0;
  int64_t num_doc_indices_ = 0;
  int64_t total_tokens_ = 0;
  // The index arrays stay in the map: the i32 lengths start at byte 34, unaligned, so
  // elements are read with memcpy rather than through typed pointers.
  const unsigned char* lengths_ = nullptr;
  const unsigned char* pointers_ = nullptr;
  const unsigned char* doc_index_ = nullptr;
  const unsigned char* idx_ = nullptr;
  size_t idx_size_ = 0;
  const unsigned char* bin_ = nullptr;
  size_t bin_size_ = 0;
};

// Writes a dataset one document at a time; every document is one sequence. The .bin is
// streamed; the .idx appears (atomically, by rename) only in finish(), so an interrupted
// write never leaves a dataset that looks complete.
class IndexedDatasetWriter {
 public:
  // dtype: u16 when vocab_size <= 65536, else i32.
  IndexedDatasetWriter(const std::string& prefix, int64_t vocab_size);
  void add_document(const std::vector<int32_t>& tokens);
  void finish();  // writes the .idx; the dataset is complete only after this
  int64_t num_documents() const { return int64_t(lengths_.size()); }
  int64_t num_tokens() const { return total_tokens_; }

 private:
  std::string prefix_;
  int64_t vocab_size_;
  int dtype_code_;
  size_t token_bytes_;
  std::ofstream bin_;
  std::vector<int32_t> lengths_;
  std::vector<int64_t> pointers_;
  std::vector<unsigned char> scratch_;  // one document's tokens, encoded
  int64_t total_tokens_ = 0;
  bool finished_ = false;
};

}  // namespace sigma
