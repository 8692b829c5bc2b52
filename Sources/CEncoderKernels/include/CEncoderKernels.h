// The encoder's AVX-512 kernels (EncoderKernels.c), used by Sources/Evaluation/EncoderKernels.swift. Call the
// *_avx512 functions only when ts_encoder_has_avx512() returns 1; elsewhere they do nothing.
#ifndef C_ENCODER_KERNELS_H
#define C_ENCODER_KERNELS_H

/// 1 when the CPU has AVX-512F and FMA and the OS saves the ZMM and mask registers.
int ts_encoder_has_avx512(void);

/// x ← x·Φ(x) (exact GELU, erf-based), n floats.
void ts_gelu_avx512(float *x, long n);

/// x ← GELU(x + bias) on `rows` rows of `width` floats.
void ts_bias_gelu_avx512(float *x, long rows, long width, const float *bias);

/// LayerNorm of `rows` rows of `width` floats from `in` into `out` (which may equal `in`), biased variance as PyTorch.
/// With `bias` (else NULL), the rows of `in` are first replaced by in + bias.
void ts_layernorm_avx512(
    float *in, const float *bias, float *out, long rows, long width, const float *gamma, const float *beta, float eps);

/// Floats of scratch ts_attention_avx512 needs for a sequence of n tokens and `heads` heads of size d.
long ts_attention_scratch_floats(long n, long heads, long d);

/// `heads` consecutive heads of one sequence of n tokens: out = softmax(scale · (Q + qb)(K + kb)ᵀ) (V + vb) per head.
/// `q`: the first head's Q in row 0 of the fused QKV product without its bias (row stride ld; K and V `hidden` and
/// 2·hidden floats further); `bias`: the first head's Q bias in the 3·hidden QKV bias; `out`: the first head's
/// columns in row 0 of the context (row stride ldo). d must be a multiple of 16; `scratch` holds
/// ts_attention_scratch_floats(n, heads, d) floats.
void ts_attention_avx512(
    const float *q, long ld, long n, long heads, long d, long hidden, float scale, const float *bias, float *out,
    long ldo, float *scratch);

/// c[i, j] = Σₚ a[i, p]·w[j, p] (plus c's own value when accumulate) for i < m, j < n: a product of a few rows by
/// a row-major weight tile read in place (no packed copy), 4 × 4 dot products at a time. k a multiple of 16;
/// row strides lda, ldw, ldc in floats.
void ts_small_gemm_nt_avx512(const float *a, long lda, const float *w, long ldw, float *c, long ldc, long m, long n,
                             long k, int accumulate);

#endif
