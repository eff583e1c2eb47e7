// Text generation with a Decoder: prompt in, text streamed out, until a stop sequence, the
// end-of-document token or the token budget. Shared by `sigma generate` and the generative
// benchmarks (eval/).
#pragma once

#include "core/data/tokenizer.h"
#include "infer/sampler.h"
#include "models/decoder.h"

#include <functional>
#include <string>
#include <string_view>
#include <vector>

namespace sigma {

struct GenerationConfig {
  int64_t max_new_tokens = 128;
  SamplingConfig sampling;
  std::vector<std::string> stop;  // generation ends before the first of these in the output
};

enum class FinishReason { kStop, kEndOfDocument, kLength };
const char* finish_reason_name(FinishReason reason);

struct Generation {
  std::string text;  // the output, without the stop sequence
  int64_t prompt_tokens = 0;
  int64_t new_tokens = 0;
  FinishReason finish = FinishReason::kLength;
  double prefill_seconds = 0, decode_seconds = 0;
};

// Generates from `prompt` in a fresh cache (the decoder is truncated to 0 first). `on_text`
// receives the output as it is produced, in pieces that concatenate to Generation::text:
// text that might begin a stop sequence, or an incomplete UTF-8 character, is held back
// until it is decided.
Generation generate(Decoder& decoder, const Tokenizer& tokenizer, const std::string& prompt,
                    const GenerationConfig& config,
                    const std::function<void(std::string_view)>& on_text = {});

// The positions the decoder needs for `prompt_tokens` plus the budget.
inline int64_t generation_capacity(int64_t prompt_tokens, const GenerationConfig& config) {
  return prompt_tokens + config.max_new_tokens;
}

}  // namespace sigma
