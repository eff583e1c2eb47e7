// `sigma data prepare`: text files, directories and JSONL -> one Megatron indexed dataset,
// streamed through a bounded pipeline: a reader thread cuts the inputs into batches of
// documents, worker threads tokenize them, and the calling thread writes them in input order.
// Leaves out: sharded outputs, and splitting one huge document (a text file is one document
// and is held in memory whole; a JSONL file is streamed line by line).
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace sigma {

struct PrepareProgress {
  int64_t bytes_read = 0;  // document text read so far (after decompression)
  int64_t documents = 0;   // written so far
  int64_t tokens = 0;
  double seconds = 0;
  bool done = false;       // the last call, after the dataset is complete
};

struct PrepareOptions {
  std::vector<std::string> inputs;  // files or directories (walked recursively, sorted)
  std::string tokenizer = "byte";   // "byte" or a tokenizer.json path (make_tokenizer)
  std::string out_prefix;
  std::string jsonl_field = "text";  // for *.jsonl inputs: the field holding a document
  int num_threads = 0;               // tokenizing threads; 0: one per hardware thread
  // Memory bound: at most max_batches_in_flight batches of about batch_bytes of text each
  // (plus their tokens) exist between reading and writing; 0: twice the threads, plus two.
  int64_t batch_bytes = int64_t(4) << 20;
  int max_batches_in_flight = 0;
  // Called from the calling thread every progress_interval_s seconds, and once at the end.
  std::function<void(const PrepareProgress&)> on_progress;
  double progress_interval_s = 1;
};

struct PrepareStats {
  int64_t documents = 0;
  int64_t tokens = 0;
  int64_t text_bytes = 0;     // of the documents, after decompression
  int64_t skipped_files = 0;  // binary (a NUL in the first 8 KiB) or unreadable
  double seconds = 0;
  int threads = 0;                  // tokenizing threads used
  int64_t peak_buffered_bytes = 0;  // most document text held between reading and writing
};

// One document per text file (or per JSONL line), empty documents skipped, *.gz files
// decompressed. Each document is the tokenizer's encode(text), which applies a tokenizer.json's
// post-processor (a Llama-3 style file adds BOS), followed by EOS unless the post-processor
// already ended it with EOS: "BOS text EOS", as Megatron-LM's preprocess_data.py writes with
// a Hugging Face tokenizer and --append-eod. Directories are walked recursively in sorted order
// and inputs taken in the order given; the output is byte-identical for any thread count.
PrepareStats prepare_dataset(const PrepareOptions& options);

}  // namespace sigma
