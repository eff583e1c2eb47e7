// `sigma eval --bench mc`: multiple choice by log-likelihood, with lm-evaluation-harness's
// conventions (its `multiple_choice` output type):
//   - each choice is scored as the continuation delimiter + choice after the context
//     (delimiter " " unless the item says otherwise); whitespace that ends the context moves
//     to the start of the continuation; the continuation's tokens are those of
//     encode(context + continuation) after the tokens of encode(context); an empty context
//     is the end-of-document token;
//   - loglikelihood = sum of log p(continuation token | everything before it);
//   - acc: the highest loglikelihood is the answer; acc_norm: the highest loglikelihood per
//     byte of the choice (UTF-8 bytes; the harness divides by the length of the choice
//     string, the same for ASCII); ties go to the first choice, as numpy's argmax;
//   - acc_stderr: sqrt(acc (1 - acc) / (n - 1)), the harness's sample standard error.
// Items: {"context": str, "choices": [str, ...], "answer": index, "delimiter"?: str}.
// The context is computed once per item in the decoder's cache and each choice continues it.
#pragma once

#include "core/data/tokenizer.h"
#include "eval/results.h"
#include "infer/trained_model.h"

#include <nlohmann/json.hpp>

namespace sigma {

struct ChoiceRequest {
  std::vector<int32_t> context, continuation;
};
ChoiceRequest encode_choice(const Tokenizer& tokenizer, const std::string& context,
                            const std::string& continuation);

void validate_choice_item(const nlohmann::json& item);

// Index of the answer by acc (raw) and acc_norm (per byte of each choice).
struct ChoicePick {
  size_t raw = 0, per_byte = 0;
};
ChoicePick pick_choice(const std::vector<double>& loglikelihoods,
                       const std::vector<std::string>& choices);

std::vector<MetricResult> evaluate_multiple_choice(TrainedModel& model, const std::string& path,
                                                   int64_t limit, int64_t max_seq);

}  // namespace sigma
