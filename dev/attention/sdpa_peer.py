"""PyTorch SDPA on the three DiffQKV bench shapes, timed and counted the way
../../../shared/bench/kernels_peer.py does (K and V repeated to the query heads, causal,
medians of triton's do_bench; fwd+bwd counted as 3.5x the causal forward FLOPs), so the CUDA
kernels' figures can be set beside the peer's measured in the same GPU call.

Besides PyTorch's own choice ("default") it forces each fused backend in turn, so the notes
can say which kernel the peer runs: the one whose times match the default's."""
from contextlib import nullcontext

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel
from triton.testing import do_bench

SHAPES = [(4, 4096, 32, 4, 16, 64), (4, 4096, 16, 4, 4, 96), (2, 8192, 32, 4, 16, 128)]
BACKENDS = [("default", None), ("flash", SDPBackend.FLASH_ATTENTION),
            ("cudnn", SDPBackend.CUDNN_ATTENTION), ("efficient", SDPBackend.EFFICIENT_ATTENTION)]

print(f"torch {torch.__version__}, cuDNN {torch.backends.cudnn.version()}, "
      f"{torch.cuda.get_device_name()}", flush=True)
for batch, seq, n_q, n_k, n_v, d in SHAPES:
    make = lambda heads: torch.randn(batch, heads, seq, d, device="cuda", dtype=torch.bfloat16,
                                     requires_grad=True)
    q, k, v = make(n_q), make(n_k), make(n_v)
    grad = torch.randn(batch, n_q, seq, d, device="cuda", dtype=torch.bfloat16)

    def forward():
        return F.scaled_dot_product_attention(q, k.repeat_interleave(n_q // n_k, 1),
                                              v.repeat_interleave(n_q // n_v, 1), is_causal=True)

    def forward_backward():
        forward().backward(grad)

    flops = 4 * batch * n_q * seq * seq * d / 2
    for name, backend in BACKENDS:
        try:
            with nullcontext() if backend is None else sdpa_kernel(backend):
                fwd_ms = do_bench(forward, return_mode="median")
                fb_ms = do_bench(forward_backward, return_mode="median")
        except RuntimeError as e:  # the backend refuses these inputs
            print(f"SDPA {name:9} B{batch} T{seq} {n_q}/{n_k}/{n_v} d{d}: unsupported "
                  f"({str(e).splitlines()[0][:80]})", flush=True)
            continue
        print(f"SDPA {name:9} B{batch} T{seq} {n_q}/{n_k}/{n_v} d{d}: fwd {fwd_ms:.3f} ms "
              f"{flops / fwd_ms / 1e9:.1f} TFLOP/s, fwd+bwd {fb_ms:.3f} ms "
              f"{3.5 * flops / fb_ms / 1e9:.1f} TFLOP/s", flush=True)
