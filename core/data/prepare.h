// `sigma data prepare`: text files, directories and JSONL -> one Megatron indexed dataset.
// Single-threaded for now: parallel tokenizing arrives with the BPE tokenizer.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace sigma {

struct PrepareOptions {
  std::vector<std::string> inputs;  // files or directories (walked recursively, sorted)
  std::string tokenizer = "byte";
  std::string out_prefix;
  std::string jsonl_field = "text";  // for *.jsonl inputs: the field holding a document
};

struct PrepareStats {
  int64_t documents = 0;
  int64_t tokens = 0;
  int64_t text_bytes = 0;     // of the documents, after decompression
  int64_t skipped_files = 0;  // binary (a NUL in the first 8 KiB) or unreadable
  double seconds = 0;
};

// One document per text file (or per JSONL line), EOS appended to each; empty documents
// are skipped and *.gz files are decompressed first. Directories are walked recursively in
// sorted order; inputs are taken in the order given, so the document order (and with it the
// validation split, the last documents) is reproducible.
PrepareStats prepare_dataset(const PrepareOptions& options);

}  // namespace sigma
