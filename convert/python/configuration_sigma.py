# SigmaConfig: the config.json of a SigmaForCausalLM written by `sigma convert --to hf`.
# Written for sigma (not copied from elsewhere); field meanings follow sigma's recipe keys
# (recipes/README.md) and SIGMA-FAMILY.md sections 1-2.
try:
    from transformers import PreTrainedConfig as _BaseConfig  # transformers >= 5
except ImportError:
    from transformers import PretrainedConfig as _BaseConfig


class SigmaConfig(_BaseConfig):
    """Sigma (DiffQKV attention, AugQ, QK-norm) with an optional Sigma-MoE feed-forward.

    num_attention_heads / num_key_heads / num_value_heads: n_q, n_k, n_v (each of n_k and
    n_v divides n_q; query head i reads key head i * n_k // n_q and value head
    i * n_v // n_q). head_dim: d_qk of Q and K; v_head_dim: d_v. augq_intermediate_size:
    the SwiGLU block on Q after q_proj (0 = none). MoE (num_experts > 0): layers from
    first_k_dense_layers on route each token to num_experts_per_tok[layer] experts by
    router_score ("softmax" or "sigmoid") of an fp32 linear router, plus an optional expert
    bias that steers the choice only, optional renormalisation of the chosen scores, and an
    always-on shared expert of width shared_expert_intermediate_size.
    """

    model_type = "sigma"
    keys_to_ignore_at_inference = ["past_key_values"]

    def __init__(self, vocab_size=320, hidden_size=256, intermediate_size=768,
                 num_hidden_layers=6, num_attention_heads=8, num_key_heads=2,
                 num_value_heads=4, head_dim=32, v_head_dim=32, augq_intermediate_size=0,
                 qk_norm=False, rms_norm_eps=1e-6, rope_theta=10000.0,
                 max_position_embeddings=2048, initializer_range=0.02,
                 tie_word_embeddings=False, num_experts=0, moe_intermediate_size=0,
                 shared_expert_intermediate_size=0, first_k_dense_layers=0,
                 router_score="softmax", norm_topk_prob=False, num_experts_per_tok=None,
                 expert_bias_update_rate=0.0, use_cache=True, **kwargs):
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.intermediate_size = intermediate_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.num_key_heads = num_key_heads
        self.num_value_heads = num_value_heads
        # Cache utilities of transformers read num_key_value_heads; K's head count is the one
        # they may size by (V's is given by the tensors themselves).
        self.num_key_value_heads = num_key_heads
        self.head_dim = head_dim
        self.v_head_dim = v_head_dim
        self.augq_intermediate_size = augq_intermediate_size
        self.qk_norm = qk_norm
        self.rms_norm_eps = rms_norm_eps
        self.rope_theta = rope_theta
        self.max_position_embeddings = max_position_embeddings
        self.initializer_range = initializer_range
        self.num_experts = num_experts
        self.moe_intermediate_size = moe_intermediate_size
        self.shared_expert_intermediate_size = shared_expert_intermediate_size
        self.first_k_dense_layers = first_k_dense_layers
        self.router_score = router_score
        self.norm_topk_prob = norm_topk_prob
        self.num_experts_per_tok = list(num_experts_per_tok or [])
        self.expert_bias_update_rate = expert_bias_update_rate
        self.use_cache = use_cache
        kwargs.pop("rope_parameters", None)
        super().__init__(tie_word_embeddings=tie_word_embeddings, **kwargs)
