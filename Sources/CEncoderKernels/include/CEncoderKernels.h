// The encoder's AVX-512 kernels (EncoderKernels.c), used by Sources/Evaluation/EncoderKernels.swift. Call the
// *_avx512 functions only when ts_encoder_has_avx512() returns 1; elsewhere they do nothing.
#ifndef C_ENCODER_KERNELS_H
#define C_ENCODER_KERNELS_H

/// 1 when the CPU has AVX-512F and FMA and the OS saves the ZMM and mask registers.
int ts_encoder_has_avx512(void);

/// x ← x·Φ(x) (exact GELU, erf-based), n floats.
void ts_gelu_avx512(float *x, long n);

/// LayerNorm of `rows` rows of `width` floats from `in` into `out` (which may equal `in`), biased variance as PyTorch.
void ts_layernorm_avx512(
    const float *in, float *out, long rows, long width, const float *gamma, const float *beta, float eps);

/// Floats of scratch ts_attention_avx512 needs for a sequence of n tokens and head size d.
long ts_attention_scratch_floats(long n, long d);

/// One head of one sequence: out = softmax(scale · Q Kᵀ) V; Q, K, V rows of n tokens at row stride ld (the fused
/// QKV buffer), out at row stride ldo. d must be a multiple of 16. `scratch` holds ts_attention_scratch_floats floats.
void ts_attention_avx512(
    const float *q, const float *k, const float *v, long ld, long n, long d, float scale, float *out, long ldo,
    float *scratch);

#endif
