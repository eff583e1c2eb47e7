# Generates the wgmma wrappers of attention_wgmma.cuh (one asm statement per shape): register A
# with an MN-major B (P V, dS K, P^T dO, dS^T Q) at N = 32 and 64, and shared-memory A and B,
# both K-major (Q K^T, dO V^T and their transposes) at N = 64, and at N = 128 for S = Q K^T and
# dP = dO V^T over a whole 128-key tile (Q or dO read from shared memory once per k step, not
# twice); the backward's S^T = K Q^T and dP^T = V dO^T over 64-query tiles take N = 64 with
# scale-d; and shared-memory A MN-major (dS stored as dS^T, keys along the rows) with an
# MN-major B at N = 32 and 64, for the backward's dQ = dS K.
out = []
def acc_constraints(n):
    return ", ".join(f'"+f"(acc[{i//4}][{i%4}])' for i in range(n // 2))
# The scale-d ones take the predicate: 0 on a product's first k step overwrites the
# accumulators, so they need no zeroing (and ptxas no wait for the zeroing moves).
for kind, n, trans, scale_d in (("rs", 32, 1, False), ("rs", 64, 1, False), ("ss", 64, 0, False),
                                ("ss", 128, 0, True), ("ss", 64, 0, True), ("ss_mn", 32, 1, True),
                                ("ss_mn", 64, 1, True)):
    nacc = n // 2
    regs = ", ".join(f"%{i}" for i in range(nacc))
    if kind == "rs":
        a = "{" + ", ".join(f"%{nacc + i}" for i in range(4)) + "}"
        operands = f"{a}, %{nacc + 4}"
        pred = nacc + 5
        inputs = '"r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc_b), "r"(1)'
        tail = f"p, 1, 1, {trans}"
        sig = f"template <>\n__device__ __forceinline__ void Wgmma<{n}, {trans}>::rs(float (*acc)[4], const uint32_t (&a)[4], uint64_t desc_b) {{"
    else:
        operands = f"%{nacc}, %{nacc + 1}"
        pred = nacc + 2
        inputs = '"l"(desc_a), "l"(desc_b), ' + ('"r"(scale_d)' if scale_d else '"r"(1)')
        tail = f"p, 1, 1, {int(kind == 'ss_mn')}, {trans}"
        params = "uint64_t desc_a, uint64_t desc_b" + (", int scale_d" if scale_d else "")
        sig = f"template <>\n__device__ __forceinline__ void Wgmma<{n}, {trans}>::{kind}(float (*acc)[4], {params}) {{"
    body = (f'  asm volatile(\n      "{{\\n.reg .pred p;\\nsetp.ne.b32 p, %{pred}, 0;\\n"\n'
            f'      "wgmma.mma_async.sync.aligned.m64n{n}k16.f32.bf16.bf16 {{{regs}}}, "\n'
            f'      "{operands}, {tail};\\n}}\\n"\n'
            f'      : {acc_constraints(n)}\n'
            f'      : {inputs});\n}}')
    out.append(sig + "\n" + body)
print("\n\n".join(out))
