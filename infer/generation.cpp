#include "infer/generation.h"

#include "core/error.h"

#include <algorithm>
#include <chrono>

namespace sigma {

using Clock = std::chrono::steady_clock;

const char* finish_reason_name(FinishReason reason) {
  switch (reason) {
    case FinishReason::kStop: return "stop";
    case FinishReason::kEndOfDocument: return "eos";
    case FinishReason::kLength: return "length";
  }
  return "?";
}

namespace {

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// Bytes at the end of `text` that begin a UTF-8 character the text does not finish yet.
size_t incomplete_utf8_tail(const std::string& text) {
  size_t n = text.size();
  for (size_t back = 1; back <= std::min<size_t>(3, n); ++back) {
    unsigned char c = static_cast<unsigned char>(text[n - back]);
    if ((c & 0xC0) == 0x80) continue;  // a continuation byte: look further back
    size_t need = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC0 ? 2 : 1;
    return need > back ? back : 0;
  }
  return 0;
}

// The longest end of `text` that is a proper prefix of some stop sequence.
size_t possible_stop_tail(const std::string& text, const std::vector<std::string>& stops) {
  size_t hold = 0;
  for (const std::string& stop : stops)
    for (size_t len = std::min(stop.size() - 1, text.size()); len > hold; --len)
      if (text.compare(text.size() - len, len, stop, 0, len) == 0) {
        hold = len;
        break;
      }
  return hold;
}

}  // namespace

Generation generate(Decoder& decoder, const Tokenizer& tokenizer, const std::string& prompt,
                    const GenerationConfig& config,
                    const std::function<void(std::string_view)>& on_text) {
  for (const std::string& stop : config.stop)
    if (stop.empty()) fail("--stop: an empty stop sequence would stop at once");
  std::vector<int32_t> ids = tokenizer.encode(prompt);
  if (ids.empty()) ids.push_back(tokenizer.eos_id());  // an empty prompt starts a document
  Generation out;
  out.prompt_tokens = int64_t(ids.size());
  decoder.truncate(0);
  Sampler sampler(config.sampling);
  std::vector<int32_t> generated;
  size_t emitted = 0;
  auto emit_until = [&](size_t end) {
    if (end > emitted && on_text)
      on_text(std::string_view(out.text).substr(emitted, end - emitted));
    emitted = std::max(emitted, end);
  };
  auto start = Clock::now();
  Tensor logits = decoder.next_logits(ids);
  out.prefill_seconds = seconds_since(start);
  start = Clock::now();
  while (out.new_tokens < config.max_new_tokens) {
    int32_t next = sampler.sample({logits.f32(), size_t(logits.numel())});
    ++out.new_tokens;
    if (next == tokenizer.eos_id()) {
      out.finish = FinishReason::kEndOfDocument;
      break;
    }
    generated.push_back(next);
    out.text = tokenizer.decode(generated);
    size_t stop_at = std::string::npos;
    for (const std::string& stop : config.stop) stop_at = std::min(stop_at, out.text.find(stop));
    if (stop_at != std::string::npos) {
      out.text.resize(stop_at);
      out.finish = FinishReason::kStop;
      break;
    }
    emit_until(out.text.size() -
               std::max(incomplete_utf8_tail(out.text), possible_stop_tail(out.text, config.stop)));
    if (out.new_tokens < config.max_new_tokens) logits = decoder.next_logits({&next, 1});
  }
  out.decode_seconds = seconds_since(start);
  emit_until(out.text.size());
  return out;
}

}  // namespace sigma
