// The remote-code files `sigma convert --to hf` writes beside a SigmaForCausalLM model:
// convert/python/configuration_sigma.py and modeling_sigma.py, embedded at build time
// (CMakeLists.txt), so the binary needs no source tree to export.
#pragma once

namespace sigma {

extern const char* const kConfigurationSigmaPy;
extern const char* const kModelingSigmaPy;

}  // namespace sigma
