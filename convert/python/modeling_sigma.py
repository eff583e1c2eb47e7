# SigmaForCausalLM: the Sigma model family in PyTorch for transformers (trust_remote_code),
# written for `sigma convert --to hf` from sigma's contracts (DESIGN.md "Contracts",
# SIGMA-FAMILY.md sections 1-2), not copied from elsewhere.
#
#   attention  DiffQKV (Sigma paper, arXiv 2501.13629, section 2): n_q, n_k, n_v heads;
#              K and V are cached with their own head counts, never repeated in the cache
#   AugQ       q = q_down(silu(q_gate(q)) * q_up(q)) after q_proj (section 2.3)
#   QK-norm    RMSNorm over each Q and K head before RoPE (rotate-half, as HF Llama)
#   MoE        fp32 linear router, softmax or sigmoid scores, per-layer top-k chosen on
#              scores + expert bias, weights = chosen scores (optionally renormalised),
#              stacked SwiGLU experts [E, F, D], optional shared expert (Sigma-MoE-Tiny)
# Parameter names are sigma's, which are Hugging Face's Llama / Qwen3-MoE names with the
# experts stacked: model.layers.L.mlp.experts.{gate_proj,up_proj,down_proj}.weight.
import math

import torch
import torch.nn.functional as F
import transformers
from torch import nn
from transformers import GenerationMixin, PreTrainedModel
from transformers.cache_utils import DynamicCache
from transformers.modeling_outputs import CausalLMOutputWithPast

from .configuration_sigma import SigmaConfig

try:  # transformers >= 5: initialisers that leave loaded weights alone
    from transformers import initialization as _init
except ImportError:
    _init = nn.init

_V5 = int(transformers.__version__.split(".")[0]) >= 5


class SigmaRMSNorm(nn.Module):
    def __init__(self, dim, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x):
        x32 = x.float()
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x32.to(x.dtype)


def _rotate_half(x):
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def _rope(positions, dim, theta, dtype):
    """cos, sin [B, 1, T, dim] for rotate-half RoPE at integer positions [B, T]."""
    exponents = torch.arange(0, dim, 2, dtype=torch.float32, device=positions.device) / dim
    inv_freq = 1.0 / (theta ** exponents)
    angles = positions.float()[..., None] * inv_freq
    angles = torch.cat((angles, angles), dim=-1)[:, None]
    return angles.cos().to(dtype), angles.sin().to(dtype)


class SigmaMLP(nn.Module):
    def __init__(self, hidden, width):
        super().__init__()
        self.gate_proj = nn.Linear(hidden, width, bias=False)
        self.up_proj = nn.Linear(hidden, width, bias=False)
        self.down_proj = nn.Linear(width, hidden, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class SigmaStackedWeight(nn.Module):
    """One stacked expert matrix, [E, out, in], saved as `<name>.weight`."""

    def __init__(self, *shape):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(*shape))


class SigmaExperts(nn.Module):
    def __init__(self, config):
        super().__init__()
        e, f, d = config.num_experts, config.moe_intermediate_size, config.hidden_size
        self.gate_proj = SigmaStackedWeight(e, f, d)
        self.up_proj = SigmaStackedWeight(e, f, d)
        self.down_proj = SigmaStackedWeight(e, d, f)

    def forward(self, x, expert):
        gate = x @ self.gate_proj.weight[expert].t()
        up = x @ self.up_proj.weight[expert].t()
        return (F.silu(gate) * up) @ self.down_proj.weight[expert].t()


class SigmaMoE(nn.Module):
    def __init__(self, config, layer):
        super().__init__()
        self.num_experts = config.num_experts
        self.top_k = config.num_experts_per_tok[layer]
        self.score = config.router_score
        self.renormalize = config.norm_topk_prob
        self.gate = nn.Linear(config.hidden_size, config.num_experts, bias=False)
        if config.expert_bias_update_rate > 0:
            self.gate.register_buffer("e_score_correction_bias", torch.zeros(config.num_experts))
        self.experts = SigmaExperts(config)
        width = config.shared_expert_intermediate_size
        self.shared_expert = SigmaMLP(config.hidden_size, width) if width > 0 else None

    def forward(self, x):
        shape = x.shape
        h = x.reshape(-1, shape[-1])
        logits = F.linear(h.float(), self.gate.weight.float())  # the router runs in fp32
        scores = logits.softmax(-1) if self.score == "softmax" else logits.sigmoid()
        choice = scores
        if hasattr(self.gate, "e_score_correction_bias"):
            choice = scores + self.gate.e_score_correction_bias.float()
        chosen = torch.topk(choice, self.top_k, dim=-1).indices
        weights = scores.gather(1, chosen)
        if self.renormalize:
            weights = weights / weights.sum(-1, keepdim=True)
        out = torch.zeros_like(h)
        for e in range(self.num_experts):
            token, slot = torch.where(chosen == e)
            if token.numel() == 0:
                continue
            y = self.experts(h[token], e)
            out.index_add_(0, token, y * weights[token, slot, None].to(y.dtype))
        if self.shared_expert is not None:
            out = out + self.shared_expert(h)
        return out.reshape(shape)


class SigmaAttention(nn.Module):
    def __init__(self, config, layer):
        super().__init__()
        self.layer = layer
        self.n_q = config.num_attention_heads
        self.n_k, self.n_v = config.num_key_heads, config.num_value_heads
        self.d_qk, self.d_v = config.head_dim, config.v_head_dim
        self.theta = config.rope_theta
        d = config.hidden_size
        self.q_proj = nn.Linear(d, self.n_q * self.d_qk, bias=False)
        self.k_proj = nn.Linear(d, self.n_k * self.d_qk, bias=False)
        self.v_proj = nn.Linear(d, self.n_v * self.d_v, bias=False)
        self.o_proj = nn.Linear(self.n_q * self.d_v, d, bias=False)
        a = config.augq_intermediate_size
        self.augq = a > 0
        if self.augq:
            self.q_gate_proj = nn.Linear(self.n_q * self.d_qk, a, bias=False)
            self.q_up_proj = nn.Linear(self.n_q * self.d_qk, a, bias=False)
            self.q_down_proj = nn.Linear(a, self.n_q * self.d_qk, bias=False)
        self.qk_norm = config.qk_norm
        if self.qk_norm:
            self.q_norm = SigmaRMSNorm(self.d_qk, config.rms_norm_eps)
            self.k_norm = SigmaRMSNorm(self.d_qk, config.rms_norm_eps)

    def forward(self, x, cos, sin, mask, cache):
        b, t, _ = x.shape
        q = self.q_proj(x)
        if self.augq:
            q = self.q_down_proj(F.silu(self.q_gate_proj(q)) * self.q_up_proj(q))
        q = q.view(b, t, self.n_q, self.d_qk).transpose(1, 2)
        k = self.k_proj(x).view(b, t, self.n_k, self.d_qk).transpose(1, 2)
        v = self.v_proj(x).view(b, t, self.n_v, self.d_v).transpose(1, 2)
        if self.qk_norm:
            q, k = self.q_norm(q), self.k_norm(k)
        q = q * cos + _rotate_half(q) * sin
        k = k * cos + _rotate_half(k) * sin
        if cache is not None:  # K [b, n_k, s, d_qk] and V [b, n_v, s, d_v]: separate sizes
            k, v = cache.update(k, v, self.layer)
        # Query head i reads key head i * n_k // n_q and value head i * n_v // n_q.
        k = k.repeat_interleave(self.n_q // self.n_k, dim=1)
        v = v.repeat_interleave(self.n_q // self.n_v, dim=1)
        scores = (q @ k.transpose(-1, -2)).float() / math.sqrt(self.d_qk) + mask
        y = scores.softmax(-1).to(v.dtype) @ v
        return self.o_proj(y.transpose(1, 2).reshape(b, t, self.n_q * self.d_v))


class SigmaDecoderLayer(nn.Module):
    def __init__(self, config, layer):
        super().__init__()
        self.input_layernorm = SigmaRMSNorm(config.hidden_size, config.rms_norm_eps)
        self.self_attn = SigmaAttention(config, layer)
        self.post_attention_layernorm = SigmaRMSNorm(config.hidden_size, config.rms_norm_eps)
        moe = config.num_experts > 0 and layer >= config.first_k_dense_layers
        if moe:
            self.mlp = SigmaMoE(config, layer)
        else:
            self.mlp = SigmaMLP(config.hidden_size, config.intermediate_size)

    def forward(self, x, cos, sin, mask, cache):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, mask, cache)
        return x + self.mlp(self.post_attention_layernorm(x))


class SigmaPreTrainedModel(PreTrainedModel):
    config_class = SigmaConfig
    base_model_prefix = "model"
    _no_split_modules = ["SigmaDecoderLayer"]
    _supports_cache_class = True

    def _init_weights(self, module):
        super()._init_weights(module)
        if isinstance(module, SigmaStackedWeight):
            _init.normal_(module.weight, mean=0.0, std=self.config.initializer_range)
        elif isinstance(module, SigmaMoE) and hasattr(module.gate, "e_score_correction_bias"):
            _init.zeros_(module.gate.e_score_correction_bias)


class SigmaModel(SigmaPreTrainedModel):
    def __init__(self, config):
        super().__init__(config)
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(
            SigmaDecoderLayer(config, i) for i in range(config.num_hidden_layers))
        self.norm = SigmaRMSNorm(config.hidden_size, config.rms_norm_eps)
        self.post_init()

    def forward(self, input_ids, attention_mask=None, position_ids=None, cache=None):
        x = self.embed_tokens(input_ids)
        b, t = input_ids.shape
        past = cache.get_seq_length() if cache is not None else 0
        if position_ids is None:
            position_ids = torch.arange(past, past + t, device=x.device)[None].expand(b, t)
        cos, sin = _rope(position_ids, self.config.head_dim, self.config.rope_theta, x.dtype)
        # Causal over the cached positions too; padding (attention_mask == 0) is masked out.
        keys = torch.arange(past + t, device=x.device)
        mask = torch.zeros(b, 1, t, past + t, device=x.device)
        queries = past + torch.arange(t, device=x.device)
        mask = mask.masked_fill(keys[None, :] > queries[:, None], float("-inf"))
        if attention_mask is not None:
            mask = mask.masked_fill(attention_mask[:, None, None, : past + t] == 0, float("-inf"))
        for layer in self.layers:
            x = layer(x, cos, sin, mask, cache)
        return self.norm(x)


class SigmaForCausalLM(SigmaPreTrainedModel, GenerationMixin):
    if _V5:
        _tied_weights_keys = {"lm_head.weight": "model.embed_tokens.weight"}
    else:
        _tied_weights_keys = ["lm_head.weight"]

    def __init__(self, config):
        super().__init__(config)
        self.model = SigmaModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def get_input_embeddings(self):
        return self.model.embed_tokens

    def get_output_embeddings(self):
        return self.lm_head

    def forward(self, input_ids=None, attention_mask=None, position_ids=None, past_key_values=None,
                cache=None, labels=None, use_cache=None, logits_to_keep=0, **kwargs):
        cache = cache if cache is not None else past_key_values
        use_cache = self.config.use_cache if use_cache is None else use_cache
        if use_cache and cache is None:
            cache = DynamicCache()
        hidden = self.model(input_ids, attention_mask, position_ids, cache if use_cache else None)
        if logits_to_keep:
            hidden = hidden[:, -logits_to_keep:]
        logits = self.lm_head(hidden)
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(),
                                   ignore_index=-100)
        # transformers 5 names the output's cache `cache`, 4.x `past_key_values`.
        fields = CausalLMOutputWithPast.__dataclass_fields__
        key = "cache" if "cache" in fields else "past_key_values"
        return CausalLMOutputWithPast(loss=loss, logits=logits, **{key: cache if use_cache else None})
