// TensorBoardWriter: the run's metrics as TensorBoard event files, beside metrics.jsonl, so
// `tensorboard --logdir runs/` shows a run without any conversion.
//
// An event file is a TFRecord stream: each record is its length (u64), the masked CRC-32C of
// that length (u32), the bytes, and their masked CRC-32C (u32), all little-endian. Each
// record holds one tensorflow.Event protobuf: wall_time (field 1, double), step (2, int64)
// and one of file_version (3, "brain.Event:2", the first record), summary (5: a list of
// Summary.Value, each a tag (1) and a simple_value (2, float)) or session_log (7: status
// START = 1, which tells TensorBoard to drop the points at and after its step that earlier
// files hold: how a resumed run hides what it repeats). Those few fields are encoded by hand
// here; no protobuf library is needed to write them.
//
// One file per process start, named events.out.tfevents.<seconds>.<microseconds>.<host>.<pid>
// so that TensorBoard, which reads a directory's files in name order, reads them in time order.
// Leaves out: images, histograms and text summaries.
#pragma once

#include <cstdint>
#include <cstdio>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace sigma {

// CRC-32C (Castagnoli), the checksum of TFRecord framing. crc32c("123456789") == 0xE3069283.
uint32_t crc32c(const void* data, size_t size);

class TensorBoardWriter {
 public:
  // Creates a new event file in `dir`. `restart_step` > 0 (a resumed run): a session START at
  // that step first, so TensorBoard drops what earlier files logged from there on.
  TensorBoardWriter(const std::string& dir, int64_t restart_step);
  ~TensorBoardWriter();
  TensorBoardWriter(const TensorBoardWriter&) = delete;
  TensorBoardWriter& operator=(const TensorBoardWriter&) = delete;

  // One event with these scalars at `step`; flushed at once, like metrics.jsonl.
  void scalars(int64_t step, const std::vector<std::pair<std::string, double>>& values);
  const std::string& path() const { return path_; }

 private:
  void record(std::string_view event);

  std::string path_;
  FILE* file_ = nullptr;
};

}  // namespace sigma
