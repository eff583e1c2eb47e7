// Multi-rank save and resume agreement (multi_rank.h).
#include "core/checkpoint/multi_rank.h"

#include "core/error.h"

#include <nlohmann/json.hpp>

namespace sigma {

std::string encode_rank_file_info(const RankFileInfo& info) {
  nlohmann::json slices = nlohmann::json::array();
  for (const TensorSlice& s : info.slices) {
    std::vector<int64_t> shape(s.global_shape.dims.begin(),
                               s.global_shape.dims.begin() + s.global_shape.rank);
    slices.push_back({s.name, shape, s.row_offset, s.rows});
  }
  return nlohmann::json{
      {"rank", info.rank}, {"bytes", info.bytes}, {"crc32", info.crc32}, {"slices", slices}}
      .dump();
}

RankFileInfo decode_rank_file_info(const std::string& bytes) {
  nlohmann::json j = nlohmann::json::parse(bytes);
  RankFileInfo info;
  info.rank = j.at("rank").get<int>();
  info.bytes = j.at("bytes").get<int64_t>();
  info.crc32 = j.at("crc32").get<uint32_t>();
  for (const nlohmann::json& s : j.at("slices")) {
    TensorSlice slice;
    slice.name = s.at(0).get<std::string>();
    for (int64_t d : s.at(1).get<std::vector<int64_t>>())
      slice.global_shape.dims[size_t(slice.global_shape.rank++)] = d;
    slice.row_offset = s.at(2).get<int64_t>();
    slice.rows = s.at(3).get<int64_t>();
    info.slices.push_back(std::move(slice));
  }
  return info;
}

std::string save_checkpoint(SaveRequest request, ProcessGroup& group) {
  request.rank = group.rank();
  request.world_size = group.size();
  std::string dir = group.rank() == 0 ? prepare_checkpoint_dir(request.root, request.step) : "";
  dir = group.broadcast_bytes(dir, 0);
  RankFileInfo mine = write_rank_file(dir, request);
  std::vector<std::string> gathered = group.all_gather_bytes(encode_rank_file_info(mine));
  std::string committed;
  if (group.rank() == 0) {
    std::vector<RankFileInfo> ranks;
    for (const std::string& bytes : gathered) ranks.push_back(decode_rank_file_info(bytes));
    committed = commit_checkpoint(dir, request, ranks);
  }
  return group.broadcast_bytes(committed, 0);
}

std::string agree_on_checkpoint(ProcessGroup& group, const std::function<std::string()>& find) {
  // "ok:DIR" or "error:MESSAGE", so a bad path ends every rank with rank 0's message.
  std::string answer;
  if (group.rank() == 0) {
    try {
      answer = "ok:" + find();
    } catch (const UserError& e) {
      answer = std::string("error:") + e.what();
    }
  }
  answer = group.broadcast_bytes(answer, 0);
  if (answer.rfind("error:", 0) == 0) throw EveryRankError(answer.substr(6));
  return answer.substr(3);
}

}  // namespace sigma
