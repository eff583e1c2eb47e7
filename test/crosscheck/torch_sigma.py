#!/usr/bin/python3
"""An independent PyTorch (float64) check of one sigma training step of a Sigma model.

Usage: torch_sigma.py RUN_DIR [--data PREFIX]

RUN_DIR is a `sigma train` run made so that its step-1 checkpoint exposes the gradient:
one step, optimizer.lr = 0, train.grad_clip = 0, data.shuffle = false, one data source,
data.valid_fraction = 0, checkpoint.interval = 1 (test/integration/torch_crosscheck.sh
makes two). With lr = 0 AdamW leaves the weights at their initial values, and its first
moment after step 1 is m = (1 - beta1) * g, g being the gradient of the mean loss over
every token of the step. This script rebuilds the model from DESIGN.md's contract
(parameter names and shapes, SIGMA-FAMILY.md section 1 for DiffQKV and AugQ) with nothing
of sigma but the checkpoint, recipe and token files, recomputes the step's loss and
gradients in float64 from the same fp32 weights and tokens, and compares them with
sigma's loss, g = m / (1 - beta1) per tensor, and the logged grad_norm.

MoE layers ([model.moe], SIGMA-FAMILY.md section 2) are rebuilt from the same contract:
softmax or sigmoid router, top-k of the first phase's per-layer list, optional
renormalisation, stacked SwiGLU experts, a shared expert, and the balancing losses (LBL
with micro-batch or global-batch counts, Top-1 LBL, z-loss) as per-micro-batch means
averaged over the step's micro-batches, summed over layers, added to the mean token loss.
The router's choices are recomputed here in float64; a near-tie that fp32 breaks the
other way would show as a mismatch (none on the tiny recipe).

Leaves out: multi-rank checkpoints (reads rank 0's file, which must hold every tensor
whole), and any step after the first (so the expert bias is still 0 and not used).
Exit status: 0 all match, 1 a mismatch, 2 the run or its files are unusable for the check.
"""
import argparse
import json
import math
import sys
import tomllib
from pathlib import Path

import h5py
import numpy as np
import torch
import torch.nn.functional as F

STEP_DIR = Path("checkpoints") / "step_00000001"

# Bounds. The reference runs in float64, so the differences below are sigma's fp32 error.
# Loss: a mean of fp32 per-token log-softmax values (each within a few ulp, about 1e-7
# relative) carried through L fp32 layers; 1e-5 relative leaves 100x headroom and is far
# below what a wrong formula changes (1e-3 and more).
LOSS_RTOL = 1e-5
# Gradients: each element sums N = tokens-per-step products through matmuls whose inner
# dimensions reach ~1e3. fp32 summation error grows like sqrt(n)*u (u = 6e-8) on average
# and n*u at worst, so errors of 1e-6..1e-5 of the tensor's scale are expected and 1e-4
# keeps a margin (measured on the tiny recipes: at most 7e-7 at the default init, 1.4e-6 at
# init std 0.1). The scale is the tensor's largest |g|, not each element's own value:
# elements that cancel to near zero have no meaningful relative error. A real bug (a
# missing term, a transposed index, a wrong head mapping) moves errors to 1e-2..1 of the
# scale. The absolute floor only lets an all-zero gradient compare equal; it must stay far
# below the smallest scale, because at initialisation (std 0.02) the Q/K path's gradients
# are tiny (about 1e-7 with AugQ, whose output is a product of three small matrices): a
# floor of 1e-7 would pass a q_proj or k_proj gradient that is entirely wrong.
GRAD_RTOL = 1e-4
GRAD_ATOL = 1e-12
# grad_norm is sqrt of a sum over every gradient element, so its relative error is
# bounded by the per-tensor one.
NORM_RTOL = 1e-4

MMIDIDX_MAGIC = b"MMIDIDX\x00\x00"
MMIDIDX_DTYPES = {1: np.uint8, 2: np.int8, 3: np.int16, 4: np.int32, 5: np.int64,
                  6: np.float64, 7: np.float32, 8: np.uint16}


class Unusable(Exception):
    """The run cannot be checked (not a mismatch): missing files, settings, keys."""


def require(table, key, where):
    if key not in table:
        raise Unusable(f"resolved recipe lacks {where + '.' if where else ''}{key}")
    return table[key]


def load_recipe(step_dir):
    index = step_dir / "index.h5"
    if not index.is_file():
        raise Unusable(f"{index} not found (was checkpoint.interval = 1?)")
    with h5py.File(index, "r") as f:
        if "recipe" not in f.attrs:
            raise Unusable(f"{index} has no 'recipe' attribute")
        text = f.attrs["recipe"]
    if isinstance(text, bytes):
        text = text.decode()
    return tomllib.loads(str(text))


def model_config(recipe):
    model = require(recipe, "model", "")
    att = require(model, "attention", "model")
    cfg = {k: require(model, k, "model") for k in
           ("n_layers", "d_model", "d_ff", "vocab_size", "norm_eps", "rope_theta", "tie_embeddings")}
    cfg.update({k: require(att, k, "model.attention") for k in
                ("n_q", "n_k", "n_v", "d_qk", "d_v", "d_augq", "qk_norm")})
    cfg["moe"] = model.get("moe", {"n_experts": 0})
    return cfg


def moe_layer(c, layer):
    moe = c["moe"]
    return moe["n_experts"] > 0 and layer >= moe["dense_layers"]


def layer_top_k(moe, layer):
    """Top-k of `layer` in the first step's phase (the first phase, when there are phases)."""
    top_k = moe["phases"][0]["top_k"] if moe["phases"] else moe["top_k"]
    return top_k[min(layer, len(top_k) - 1)]


def step_settings(recipe):
    """The batch geometry, after checking the run was made the way this check needs."""
    data, train = require(recipe, "data", ""), require(recipe, "train", "")
    opt = require(recipe, "optimizer", "")
    problems = []
    if require(train, "grad_clip", "train") != 0:
        problems.append("train.grad_clip must be 0")
    if require(data, "shuffle", "data"):
        problems.append("data.shuffle must be false")
    if require(data, "valid_fraction", "data") != 0:
        problems.append("data.valid_fraction must be 0")
    if len(require(data, "sources", "data")) != 1:
        problems.append("data.sources must hold exactly one source")
    if train.get("batch_ramp_start_tokens", 0) != 0:
        problems.append("train.batch_ramp_start_tokens must be 0")
    if problems:
        raise Unusable("run not made for the cross-check: " + "; ".join(problems))
    seq_len, micro_batch = require(data, "seq_len", "data"), require(train, "micro_batch", "train")
    step_tokens = require(train, "global_batch_tokens", "train")
    if step_tokens <= 0 or step_tokens % (micro_batch * seq_len):
        raise Unusable(f"train.global_batch_tokens = {step_tokens} is not a positive multiple "
                       f"of micro_batch * seq_len = {micro_batch * seq_len}")
    return {"seq_len": seq_len, "samples": step_tokens // seq_len, "micro_batch": micro_batch,
            "beta1": require(opt, "beta1", "optimizer"),
            "data": data["sources"][0]["path"]}


def expected_shapes(c):
    D, F_, V = c["d_model"], c["d_ff"], c["vocab_size"]
    q_width, v_width = c["n_q"] * c["d_qk"], c["n_q"] * c["d_v"]
    shapes = {"model.embed_tokens.weight": (V, D), "model.norm.weight": (D,)}
    if not c["tie_embeddings"]:
        shapes["lm_head.weight"] = (V, D)
    for i in range(c["n_layers"]):
        p = f"model.layers.{i}."
        shapes.update({
            p + "input_layernorm.weight": (D,),
            p + "post_attention_layernorm.weight": (D,),
            p + "self_attn.q_proj.weight": (q_width, D),
            p + "self_attn.k_proj.weight": (c["n_k"] * c["d_qk"], D),
            p + "self_attn.v_proj.weight": (c["n_v"] * c["d_v"], D),
            p + "self_attn.o_proj.weight": (D, v_width),
        })
        if moe_layer(c, i):
            moe = c["moe"]
            E, Fe = moe["n_experts"], moe["d_expert"]
            shapes.update({
                p + "mlp.gate.weight": (E, D),
                p + "mlp.experts.gate_proj.weight": (E, Fe, D),
                p + "mlp.experts.up_proj.weight": (E, Fe, D),
                p + "mlp.experts.down_proj.weight": (E, D, Fe),
            })
            if moe["n_shared_experts"] > 0:
                Fs = moe["n_shared_experts"] * (moe["d_shared_expert"] or Fe)
                shapes.update({
                    p + "mlp.shared_expert.gate_proj.weight": (Fs, D),
                    p + "mlp.shared_expert.up_proj.weight": (Fs, D),
                    p + "mlp.shared_expert.down_proj.weight": (D, Fs),
                })
        else:
            shapes.update({
                p + "mlp.gate_proj.weight": (F_, D),
                p + "mlp.up_proj.weight": (F_, D),
                p + "mlp.down_proj.weight": (D, F_),
            })
        if c["d_augq"] > 0:
            shapes.update({
                p + "self_attn.q_gate_proj.weight": (c["d_augq"], q_width),
                p + "self_attn.q_up_proj.weight": (c["d_augq"], q_width),
                p + "self_attn.q_down_proj.weight": (q_width, c["d_augq"]),
            })
        if c["qk_norm"]:
            shapes[p + "self_attn.q_norm.weight"] = (c["d_qk"],)
            shapes[p + "self_attn.k_norm.weight"] = (c["d_qk"],)
    return shapes


def read_group(f, group, shapes, rank_file):
    """Every tensor of /group as float64, after checking the names and shapes are the contract's."""
    if group not in f:
        raise Unusable(f"{rank_file} has no /{group}")
    found = {}
    f[group].visititems(lambda n, o: found.__setitem__(n, o) if isinstance(o, h5py.Dataset) else None)
    missing, extra = sorted(set(shapes) - set(found)), sorted(set(found) - set(shapes))
    if missing or extra:
        raise Unusable(f"{rank_file} /{group}: missing {missing[:4]}, unexpected {extra[:4]}")
    out = {}
    for name, shape in shapes.items():
        if tuple(found[name].shape) != shape:
            raise Unusable(f"{rank_file} /{group}/{name}: shape {found[name].shape}, expected {shape}")
        out[name] = torch.from_numpy(np.asarray(found[name][()], dtype=np.float64))
    return out


def read_token_stream(prefix):
    """The documents of a Megatron indexed dataset, concatenated in index order, as int64."""
    idx_path, bin_path = Path(prefix + ".idx"), Path(prefix + ".bin")
    if not idx_path.is_file() or not bin_path.is_file():
        raise Unusable(f"dataset {prefix}(.idx/.bin) not found")
    raw = idx_path.read_bytes()
    if raw[:9] != MMIDIDX_MAGIC:
        raise Unusable(f"{idx_path}: not an MMIDIDX index")
    version, = np.frombuffer(raw, np.uint64, 1, 9)
    code = raw[17]
    n_seq, _n_docs = np.frombuffer(raw, np.uint64, 2, 18)
    if version != 1 or code not in MMIDIDX_DTYPES:
        raise Unusable(f"{idx_path}: version {version}, dtype code {code} not understood")
    lengths = np.frombuffer(raw, np.int32, int(n_seq), 34)
    pointers = np.frombuffer(raw, np.int64, int(n_seq), 34 + 4 * int(n_seq))
    dtype = np.dtype(MMIDIDX_DTYPES[code])
    tokens = np.memmap(bin_path, dtype=np.uint8, mode="r")
    parts = [np.frombuffer(tokens, dtype, int(n), int(p)) for n, p in zip(lengths, pointers)]
    return np.concatenate(parts).astype(np.int64)


def step_batch(stream, samples, seq_len, vocab):
    """Sample i is stream[i*T : i*T + T + 1]: inputs its first T tokens, targets its last T."""
    if stream.size < samples * seq_len + 1:
        raise Unusable(f"dataset has {stream.size} tokens; one step needs {samples * seq_len + 1}")
    if stream.max() >= vocab:
        raise Unusable(f"dataset holds token id {stream.max()} >= model.vocab_size {vocab}")
    rows = np.stack([stream[i * seq_len: i * seq_len + seq_len + 1] for i in range(samples)])
    rows = torch.from_numpy(rows)
    return rows[:, :-1], rows[:, 1:]


def rmsnorm(x, w, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


def rope_tables(c, seq_len):
    half = c["d_qk"] // 2
    inv_freq = c["rope_theta"] ** (-2.0 * torch.arange(half, dtype=torch.float64) / c["d_qk"])
    angle = torch.outer(torch.arange(seq_len, dtype=torch.float64), inv_freq)  # [T, half]
    return angle.cos(), angle.sin()


def rope(x, cos, sin):
    """Rotate-half RoPE (Hugging Face Llama) on x [S, H, T, d]."""
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], -1)


def attention(h, p, pre, c, cos, sin, mask):
    S, T, _ = h.shape
    nq, nk, nv, dqk, dv = c["n_q"], c["n_k"], c["n_v"], c["d_qk"], c["d_v"]
    q = h @ p[pre + "q_proj.weight"].T
    if c["d_augq"] > 0:  # AugQ: a SwiGLU block on Q (Sigma paper section 2)
        gate = F.silu(q @ p[pre + "q_gate_proj.weight"].T)
        q = (gate * (q @ p[pre + "q_up_proj.weight"].T)) @ p[pre + "q_down_proj.weight"].T
    q = q.view(S, T, nq, dqk).transpose(1, 2)
    k = (h @ p[pre + "k_proj.weight"].T).view(S, T, nk, dqk).transpose(1, 2)
    v = (h @ p[pre + "v_proj.weight"].T).view(S, T, nv, dv).transpose(1, 2)
    if c["qk_norm"]:
        q = rmsnorm(q, p[pre + "q_norm.weight"], c["norm_eps"])
        k = rmsnorm(k, p[pre + "k_norm.weight"], c["norm_eps"])
    q, k = rope(q, cos, sin), rope(k, cos, sin)
    # DiffQKV: query head i reads key head i*n_k//n_q and value head i*n_v//n_q.
    heads = torch.arange(nq)
    k, v = k[:, heads * nk // nq], v[:, heads * nv // nq]
    scores = (q @ k.transpose(-1, -2)) / math.sqrt(dqk)
    y = scores.masked_fill(mask, float("-inf")).softmax(-1) @ v  # [S, nq, T, dv]
    return y.transpose(1, 2).reshape(S, T, nq * dv) @ p[pre + "o_proj.weight"].T


def swiglu(h, gate, up, down):
    return (F.silu(h @ gate.T) * (h @ up.T)) @ down.T


def moe_block(h, p, pre, c, layer, micro_batch):
    """The MoE block on h [S, T, D] and its balancing losses, averaged over micro-batches."""
    moe = c["moe"]
    E, k = moe["n_experts"], layer_top_k(moe, layer)
    S, T, D = h.shape
    logits = h @ p[pre + "gate.weight"].T  # [S, T, E]
    scores = logits.softmax(-1) if moe["score"] == "softmax" else logits.sigmoid()
    top, chosen = torch.topk(scores, k, dim=-1)
    if moe["renormalize"]:
        top = top / top.sum(-1, keepdim=True)
    weight = torch.zeros_like(scores).scatter(-1, chosen, top)  # [S, T, E], 0 where not chosen
    x = h.reshape(-1, D)
    out = torch.zeros_like(x)
    for e in range(E):
        y = swiglu(x, p[pre + "experts.gate_proj.weight"][e], p[pre + "experts.up_proj.weight"][e],
                   p[pre + "experts.down_proj.weight"][e])
        out = out + weight.reshape(-1, E)[:, e:e + 1] * y
    if moe["n_shared_experts"] > 0:
        out = out + swiglu(x, p[pre + "shared_expert.gate_proj.weight"],
                           p[pre + "shared_expert.up_proj.weight"],
                           p[pre + "shared_expert.down_proj.weight"])
    # Balancing losses: f from token counts (no gradient), everything else differentiable.
    counts = torch.zeros(S, E, dtype=torch.float64).scatter_add(
        1, chosen.reshape(S, -1), torch.ones(S, T * k, dtype=torch.float64))  # per sample
    step_counts = counts.sum(0)
    aux = 0
    n_micro = S // micro_batch
    for m in range(n_micro):
        rows = slice(m * micro_batch, (m + 1) * micro_batch)
        z, sc = logits[rows].reshape(-1, E), scores[rows].reshape(-1, E)
        f = step_counts if moe["lbl_scope"] == "global_batch" else counts[rows].sum(0)
        f = f / f.sum()
        aux = aux + moe["lbl_coeff"] * E * (f * sc.mean(0)).sum()
        if moe["top1_lbl_coeff"] > 0:
            fhat = (z / moe["top1_lbl_temperature"]).softmax(-1).mean(0)
            aux = aux + moe["top1_lbl_coeff"] * E * fhat.pow(2).sum() / sc.max(-1).values.mean()
        aux = aux + moe["z_loss_coeff"] * torch.logsumexp(z, -1).pow(2).mean()
    return out.reshape(S, T, D), aux / n_micro


def mean_loss(p, c, inputs, targets, micro_batch):
    T = inputs.shape[1]
    cos, sin = rope_tables(c, T)
    mask = torch.ones(T, T, dtype=torch.bool).triu(1)
    eps = c["norm_eps"]
    aux = 0
    x = p["model.embed_tokens.weight"][inputs]
    for i in range(c["n_layers"]):
        pre = f"model.layers.{i}."
        x = x + attention(rmsnorm(x, p[pre + "input_layernorm.weight"], eps), p,
                          pre + "self_attn.", c, cos, sin, mask)
        h = rmsnorm(x, p[pre + "post_attention_layernorm.weight"], eps)
        if moe_layer(c, i):
            out, layer_aux = moe_block(h, p, pre + "mlp.", c, i, micro_batch)
            x, aux = x + out, aux + layer_aux
        else:
            x = x + swiglu(h, p[pre + "mlp.gate_proj.weight"], p[pre + "mlp.up_proj.weight"],
                           p[pre + "mlp.down_proj.weight"])
    head = p["model.embed_tokens.weight"] if c["tie_embeddings"] else p["lm_head.weight"]
    logits = rmsnorm(x, p["model.norm.weight"], eps) @ head.T
    lm = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))
    return lm, aux


def first_training_row(run_dir):
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        raise Unusable(f"{path} not found")
    for line in path.read_text().splitlines():
        row = json.loads(line)
        if row.get("step") == 1 and "loss" in row:
            return row
    raise Unusable(f"{path} has no training row for step 1")


def check(run_dir, data_override):
    step_dir = run_dir / STEP_DIR
    recipe = load_recipe(step_dir)
    c, s = model_config(recipe), step_settings(recipe)
    shapes = expected_shapes(c)
    rank_file = step_dir / "rank_00000.h5"
    if not rank_file.is_file():
        raise Unusable(f"{rank_file} not found")
    # The expert bias is state, not a parameter: in /model but not in the optimizer.
    model_shapes = dict(shapes)
    if c["moe"]["n_experts"] > 0 and c["moe"]["bias_update_rate"] > 0:
        for i in range(c["n_layers"]):
            if moe_layer(c, i):
                model_shapes[f"model.layers.{i}.mlp.gate.e_score_correction_bias"] = (
                    c["moe"]["n_experts"],)
    with h5py.File(rank_file, "r") as f:
        weights = {n: w for n, w in read_group(f, "model", model_shapes, rank_file).items()
                   if n in shapes}
        moments = read_group(f, "optim/m", shapes, rank_file)
    sigma_grads = {n: m / (1.0 - s["beta1"]) for n, m in moments.items()}
    row = first_training_row(run_dir)
    if row.get("lr") != 0:  # the LR step 1 used, whichever setting made it 0
        raise Unusable(f"step 1 ran with lr {row.get('lr')}; the check needs 0 (optimizer.lr = 0)")

    prefix = data_override or s["data"]
    inputs, targets = step_batch(read_token_stream(prefix), s["samples"], s["seq_len"],
                                 c["vocab_size"])
    params = {n: w.clone().requires_grad_(True) for n, w in weights.items()}
    loss, aux = mean_loss(params, c, inputs, targets, s["micro_batch"])
    (loss + aux).backward()
    torch_grads = {n: t.grad for n, t in params.items()}

    ok = True
    print(f"{run_dir}: {c['n_layers']} layers, d_model {c['d_model']}, heads q/k/v "
          f"{c['n_q']}/{c['n_k']}/{c['n_v']}, d_augq {c['d_augq']}, qk_norm {c['qk_norm']}, "
          f"tied {c['tie_embeddings']}; {s['samples']} x {s['seq_len']} tokens from {prefix}")
    if c["moe"]["n_experts"] > 0:
        print(f"moe: {c['moe']['n_experts']} experts from layer {c['moe']['dense_layers']}, "
              f"{c['moe']['score']} router, aux loss {float(aux):.6f} in the gradient")
    print(f"{'tensor':<48} {'shape':>12} {'max|g|':>10} {'max abs err':>12} {'rel err':>9}")
    for name in shapes:
        ref, got = torch_grads[name], sigma_grads[name]
        scale = ref.abs().max().item()
        err = (got - ref).abs().max().item()
        good = err <= GRAD_RTOL * scale + GRAD_ATOL
        ok &= good
        shape = "x".join(map(str, shapes[name]))
        print(f"{name:<48} {shape:>12} {scale:10.3e} {err:12.3e} {err / max(scale, 1e-30):9.2e}"
              f"{'' if good else '  MISMATCH'}")

    ref_loss, got_loss = loss.item(), float(row["loss"])
    loss_rel = abs(got_loss - ref_loss) / abs(ref_loss)
    ok &= loss_rel <= LOSS_RTOL
    ref_norm = math.sqrt(sum(g.pow(2).sum().item() for g in torch_grads.values()))
    got_norm = float(row["grad_norm"])
    norm_rel = abs(got_norm - ref_norm) / ref_norm
    ok &= norm_rel <= NORM_RTOL
    print(f"loss      sigma {got_loss:.9f}  torch {ref_loss:.9f}  rel err {loss_rel:.2e}"
          f"{'' if loss_rel <= LOSS_RTOL else '  MISMATCH'}")
    print(f"grad_norm sigma {got_norm:.9f}  torch {ref_norm:.9f}  rel err {norm_rel:.2e}"
          f"{'' if norm_rel <= NORM_RTOL else '  MISMATCH'}")
    return ok


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--data", help="dataset prefix (default: the recipe's data source)")
    args = parser.parse_args()
    torch.set_grad_enabled(True)
    try:
        ok = check(args.run_dir, args.data)
    except Unusable as e:
        print(f"torch_sigma: {e}", file=sys.stderr)
        return 2
    print("ok: sigma matches the PyTorch reference" if ok else "FAIL: sigma differs from the PyTorch reference")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
