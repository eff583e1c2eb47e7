"""Loads sigma's Hugging Face exports in transformers and compares them with sigma.

For each spec HF_DIR:PREFIX:ARCH:TOL, with PREFIX.ids (token ids), PREFIX.logits (sigma's
full-sequence logits, f32 [T, V]) and PREFIX.greedy (sigma's greedy continuation from its
KV-cache decoder) written by test/tools/model_tool:
  - the model must load as ARCH (trust_remote_code for SigmaForCausalLM),
  - its logits on the same ids must be within TOL * max|logit| of sigma's: fp32 through a
    few layers in another summation order differs by ~1e-6 relative, so 1e-4 is tight yet
    safe; a bf16 export is held to bf16's 2^-8 relative rounding of every weight (2e-2),
  - greedy generate() (its own DynamicCache, K and V of different head counts) must produce
    sigma's tokens, up to the end-of-document id where transformers stops (fp32 only: at
    bf16's tolerance two near-equal logits may swap),
  - the tokenizer files must encode a text to the ids sigma's tokenizer gives (PREFIX.text
    and PREFIX.ids hold that text and sigma's ids when present).
Exit 0 when all pass, 1 when any differs, 2 on a setup problem. Prints one line per model.

    hf_transformers_check.py HF_DIR:PREFIX:ARCH:TOL...
    hf_transformers_check.py make OUT_DIR ARCH    (a small random model saved by transformers,
                                                   for sigma convert --from hf to import)
"""
import os
import sys

os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import torch
import transformers
from transformers import AutoModelForCausalLM, AutoTokenizer


def check(spec):
    hf_dir, prefix, arch, tol = spec.rsplit(":", 3)
    ids = [int(t) for t in open(prefix + ".ids").read().split()]
    model = AutoModelForCausalLM.from_pretrained(hf_dir, trust_remote_code=True,
                                                 dtype=torch.float32)
    model.eval()
    problems = []
    if type(model).__name__ != arch:
        problems.append(f"loaded as {type(model).__name__}, expected {arch}")
    with torch.no_grad():
        logits = model(torch.tensor([ids]), use_cache=False).logits[0].float().numpy()
    sigma = np.fromfile(prefix + ".logits", dtype=np.float32).reshape(logits.shape)
    err, scale = float(np.abs(logits - sigma).max()), float(np.abs(sigma).max())
    if not err <= float(tol) * scale:
        bound = float(tol) * scale
        problems.append(f"logits differ by {err:.3g} (scale {scale:.3g}, bound {bound:.3g})")
    want = [int(t) for t in open(prefix + ".greedy").read().split()]
    with torch.no_grad():
        out = model.generate(torch.tensor([ids]), max_new_tokens=len(want), do_sample=False,
                             attention_mask=torch.ones(1, len(ids), dtype=torch.long))
    got = out[0, len(ids):].tolist()
    eos = model.generation_config.eos_token_id
    agree = got == want[: len(got)] and (len(got) == len(want) or want[len(got)] == eos
                                         or got[-1:] == [eos])
    # Past fp32 tolerances two near-equal logits may swap: the tokens are then not compared.
    if not agree and float(tol) <= 1e-3:
        problems.append(f"greedy tokens {got} against sigma's {want}")
    try:
        text = open(prefix + ".text", encoding="utf-8").read()
        tokenizer = AutoTokenizer.from_pretrained(hf_dir, trust_remote_code=True)
        if tokenizer.encode(text, add_special_tokens=False) != ids:
            problems.append("the tokenizer encodes the text differently")
    except FileNotFoundError:
        pass
    verdict = "ok" if not problems else "FAIL: " + "; ".join(problems)
    print(f"{arch:22} {hf_dir.rsplit('/', 1)[-1]:18} max |logit diff| {err:.2e} of {scale:.2f} "
          f"({err / scale:.1e}), greedy {len(got)} tokens: {verdict}")
    return not problems


def make(out_dir, arch):
    """Saves a small random ARCH model with transformers' own save_pretrained (for import)."""
    common = dict(vocab_size=320, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, head_dim=8, rms_norm_eps=1e-6,
                  max_position_embeddings=64, tie_word_embeddings=False, initializer_range=0.1)
    torch.manual_seed(0)
    if arch == "LlamaForCausalLM":
        model = transformers.LlamaForCausalLM(transformers.LlamaConfig(**common))
    elif arch == "Qwen3MoeForCausalLM":
        model = transformers.Qwen3MoeForCausalLM(transformers.Qwen3MoeConfig(
            **common, num_experts=4, num_experts_per_tok=2, moe_intermediate_size=16,
            norm_topk_prob=True, mlp_only_layers=[0]))
    else:
        raise SystemExit(f"make: unknown architecture {arch}")
    model.save_pretrained(out_dir)
    return 0


def main():
    if len(sys.argv) < 2:
        print(__doc__)
        return 2
    if sys.argv[1] == "make":
        return make(sys.argv[2], sys.argv[3])
    print(f"torch {torch.__version__}, transformers {transformers.__version__}")
    results = [check(spec) for spec in sys.argv[1:]]
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
