// Text comparisons behind the AIMicius metrics (SIGMA-FAMILY.md section 4).
#pragma once

#include <string>
#include <vector>

namespace sigma {

// Leading/trailing whitespace removed, inner runs of whitespace made one space, and a
// surrounding pair of backquotes (`cmd` or ```cmd```) dropped: how a command compares.
std::string normalize_command(const std::string& text);

// Whitespace-separated words.
std::vector<std::string> words(const std::string& text);

// Cosine similarity of two bags of tokens (counts), in [0, 1]; 1 when both are empty.
// The CMDGen "CMD score" in place of the paper's sentence-embedding cosine: it needs no
// embedding model and still rewards a command with the right tool, flags and arguments.
double bag_cosine(const std::vector<std::string>& a, const std::vector<std::string>& b);

// |A & B| / |A | B| of two token sets; 1 when both are empty.
double jaccard(const std::vector<std::string>& a, const std::vector<std::string>& b);

// |found & wanted| / |wanted| of two sets; NaN when nothing is wanted.
double recall(const std::vector<std::string>& found, const std::vector<std::string>& wanted);

// The first fenced code block of a model's answer (```lang ... ```), else the whole text.
std::string code_block(const std::string& text);

}  // namespace sigma
