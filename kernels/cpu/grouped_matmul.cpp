// Grouped matmul over experts on the CPU: one plain matmul per expert, on its rows.
//
// The rows of inp are grouped by expert (moe_routing_map's order), so expert e's rows are one
// contiguous slice and its weight one [O, I] matrix of the stacked [E, O, I] tensor. The
// counts are read here on the host; the CUDA twin reads them on the device instead.
#include "kernels/cpu/cpu_ops.h"

#include <algorithm>
#include <cstdint>
#include <vector>

namespace sigma::cpu {
namespace {

// Expert e's [O, I] matrix within a stacked [E, O, I] weight (or its gradient).
Tensor expert_matrix(const Tensor& stacked, int64_t e) {
  return stacked.slice_rows(e, e + 1).view({stacked.size(1), stacked.size(2)});
}

// Row offsets of the experts' groups: expert e owns rows [begin[e], begin[e + 1]).
std::vector<int64_t> group_begins(const Tensor& tokens_per_expert, int64_t rows) {
  const int64_t experts = tokens_per_expert.numel();
  std::vector<int64_t> begin(size_t(experts) + 1, 0);
  for (int64_t e = 0; e < experts; ++e) {
    int32_t count = tokens_per_expert.i32()[e];
    SIGMA_CHECK(count >= 0, "grouped_matmul: expert {} has {} tokens", e, count);
    begin[size_t(e) + 1] = begin[size_t(e)] + count;
  }
  SIGMA_CHECK(begin.back() == rows, "grouped_matmul: tokens_per_expert sums to {}, inp has {} rows",
              begin.back(), rows);
  return begin;
}

}  // namespace

void grouped_matmul_forward(Tensor out, Tensor inp, Tensor weight, Tensor tokens_per_expert) {
  std::vector<int64_t> begin = group_begins(tokens_per_expert, inp.size(0));
  for (int64_t e = 0; e < weight.size(0); ++e) {
    int64_t b = begin[size_t(e)], end = begin[size_t(e) + 1];
    if (end > b)
      matmul_forward(out.slice_rows(b, end), inp.slice_rows(b, end), expert_matrix(weight, e));
  }
}

void grouped_matmul_backward(Tensor d_inp, Tensor d_weight, Tensor d_out, Tensor inp,
                             Tensor weight, Tensor tokens_per_expert, GradWrite write) {
  std::vector<int64_t> begin = group_begins(tokens_per_expert, inp.size(0));
  for (int64_t e = 0; e < weight.size(0); ++e) {
    int64_t b = begin[size_t(e)], end = begin[size_t(e) + 1];
    Tensor d_weight_e = expert_matrix(d_weight, e);
    if (end == b) {  // no rows: no gradient to add
      if (write == GradWrite::kOverwrite) std::fill_n(d_weight_e.f32(), d_weight_e.numel(), 0.0f);
      continue;
    }
    Tensor d_inp_e = d_inp.defined() ? d_inp.slice_rows(b, end) : Tensor{};
    cpu::matmul_backward(d_inp_e, d_weight_e, d_out.slice_rows(b, end), inp.slice_rows(b, end),
                         expert_matrix(weight, e), write, GradWrite::kOverwrite);
  }
}

}  // namespace sigma::cpu
