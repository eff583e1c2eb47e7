// The table rows of index.h5 (layout in index.h) as they are in memory, and their HDF5 types:
// the reader and writer in index.cpp use them, and so does the index fuzz target, which writes
// well-formed tables as well as retyped ones.
#pragma once

#include "core/checkpoint/hdf5_file.h"

#include <cstdint>
#include <string>

namespace sigma {

// One row of rank_files: a rank's file and its digest. HDF5 matches fields by name on read.
struct RankFileRow {
  int32_t rank;
  int64_t bytes;
  uint32_t crc32;
};

// One row of a tensor's table: rows [row_offset, row_offset + rows) live in `rank`'s file.
struct SliceRow {
  int32_t rank;
  int64_t row_offset;
  int64_t rows;
};

h5::Object rank_file_row_type(const std::string& file);
h5::Object slice_row_type(const std::string& file);

}  // namespace sigma
