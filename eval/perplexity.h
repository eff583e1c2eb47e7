// `sigma eval --bench ppl`: mean next-token loss, perplexity and bits per byte on held-out
// token data: the run's validation split (the last data.valid_fraction of each source's
// documents, read as the trainer's validation reads it) or every document of a given
// Megatron dataset PREFIX (.bin/.idx). Full-sequence forwards of the recipe's micro-batch
// and seq_len, samples cut at stride seq_len as in training, on the model's device.
#pragma once

#include "eval/results.h"
#include "infer/trained_model.h"

namespace sigma {

// limit > 0: at most that many sequences.
std::vector<MetricResult> evaluate_perplexity(TrainedModel& model, const std::string& data_prefix,
                                              int64_t limit);

}  // namespace sigma
