// The encoder's AVX-512 kernels, compiled for AVX-512 by target attributes and chosen at run time
// (ts_encoder_has_avx512). Swift builds for baseline x86-64, where its SIMD8<Float> runs as two SSE halves and
// cannot name a wider target per function. All arithmetic is F32, as the Swift fallback in EncoderKernels.swift.
#include "CEncoderKernels.h"

#if defined(__x86_64__)
#include <cpuid.h>
#include <immintrin.h>

#define TS_AVX512 __attribute__((target("avx512f,fma,avx2"))) static inline
#define TS_AVX512_API __attribute__((target("avx512f,fma,avx2")))

/// 1 when the CPU has AVX-512F and FMA and the OS saves the ZMM and mask registers.
int ts_encoder_has_avx512(void) {
    unsigned a, b, c, d;
    if (!__get_cpuid_count(1, 0, &a, &b, &c, &d)) return 0;
    if (!(c & (1u << 27)) || !(c & (1u << 12))) return 0;  // OSXSAVE, FMA
    unsigned lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    if ((lo & 0xE6u) != 0xE6u) return 0;  // XMM, YMM, opmask, ZMM_Hi256, Hi16_ZMM state
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return 0;
    return (b & (1u << 16)) != 0;  // AVX512F
}

/// e^x with the algorithm of VectorMath.exp (Cody-Waite, Cephes degree 5); 2^n by scalef. 0 below -87.34.
TS_AVX512 __m512 ts_exp16(__m512 x) {
    __m512 c = _mm512_max_ps(_mm512_set1_ps(-87.33654f), x);  // NaN in x stays NaN (max returns the 2nd operand)
    c = _mm512_min_ps(_mm512_set1_ps(88.02969f), c);
    __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(c, _mm512_set1_ps(1.442695040888963f)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), c);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
    __m512 p = _mm512_set1_ps(1.9875691500e-4f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
    p = _mm512_add_ps(_mm512_fmadd_ps(p, _mm512_mul_ps(r, r), r), _mm512_set1_ps(1.0f));
    __m512 e = _mm512_scalef_ps(p, n);
    e = _mm512_mask_mov_ps(e, _mm512_cmp_ps_mask(x, _mm512_set1_ps(-87.33654f), _CMP_LT_OQ), _mm512_setzero_ps());
    return _mm512_mask_mov_ps(e, _mm512_cmp_ps_mask(x, _mm512_set1_ps(88.72283f), _CMP_GT_OQ), _mm512_set1_ps(__builtin_inff()));
}

/// erf(x) with the rational approximation of VectorMath.erf, x clamped to [-4, 4].
TS_AVX512 __m512 ts_erf16(__m512 x) {
    __m512 c = _mm512_min_ps(_mm512_set1_ps(4.0f), _mm512_max_ps(_mm512_set1_ps(-4.0f), x));
    __m512 x2 = _mm512_mul_ps(c, c);
    __m512 p = _mm512_fmadd_ps(x2, _mm512_set1_ps(-2.72614225801306e-10f), _mm512_set1_ps(2.77068142495902e-08f));
    p = _mm512_fmadd_ps(x2, p, _mm512_set1_ps(-2.10102402082508e-06f));
    p = _mm512_fmadd_ps(x2, p, _mm512_set1_ps(-5.69250639462346e-05f));
    p = _mm512_fmadd_ps(x2, p, _mm512_set1_ps(-7.34990630326855e-04f));
    p = _mm512_fmadd_ps(x2, p, _mm512_set1_ps(-2.95459980854025e-03f));
    p = _mm512_fmadd_ps(x2, p, _mm512_set1_ps(-1.60960333262415e-02f));
    p = _mm512_mul_ps(c, p);
    __m512 q = _mm512_fmadd_ps(x2, _mm512_set1_ps(-1.45660718464996e-05f), _mm512_set1_ps(-2.13374055278905e-04f));
    q = _mm512_fmadd_ps(x2, q, _mm512_set1_ps(-1.68282697438203e-03f));
    q = _mm512_fmadd_ps(x2, q, _mm512_set1_ps(-7.37332916720468e-03f));
    q = _mm512_fmadd_ps(x2, q, _mm512_set1_ps(-1.42647390514189e-02f));
    return _mm512_div_ps(p, q);
}

TS_AVX512 __mmask16 ts_tail_mask(long count) { return (__mmask16)((1u << count) - 1u); }

TS_AVX512 __m512 ts_gelu16(__m512 v) {
    const __m512 half = _mm512_set1_ps(0.5f), one = _mm512_set1_ps(1.0f), s = _mm512_set1_ps(0.70710678118654752f);
    return _mm512_mul_ps(_mm512_mul_ps(half, v), _mm512_add_ps(one, ts_erf16(_mm512_mul_ps(v, s))));
}

/// In-place exact GELU, x · ½ · (1 + erf(x / √2)), on n floats.
TS_AVX512_API void ts_gelu_avx512(float *x, long n) {
    long i = 0;
    for (; i + 16 <= n; i += 16) _mm512_storeu_ps(x + i, ts_gelu16(_mm512_loadu_ps(x + i)));
    if (i < n) {
        __mmask16 m = ts_tail_mask(n - i);
        _mm512_mask_storeu_ps(x + i, m, ts_gelu16(_mm512_maskz_loadu_ps(m, x + i)));
    }
}

/// In place on `rows` rows of `width` floats: x ← GELU(x + bias), the bias of the linear layer folded into the pass
/// that reads its product anyway.
TS_AVX512_API void ts_bias_gelu_avx512(float *x, long rows, long width, const float *bias) {
    for (long r = 0; r < rows; r++) {
        float *row = x + r * width;
        long j = 0;
        for (; j + 16 <= width; j += 16)
            _mm512_storeu_ps(row + j, ts_gelu16(_mm512_add_ps(_mm512_loadu_ps(row + j), _mm512_loadu_ps(bias + j))));
        if (j < width) {
            __mmask16 m = ts_tail_mask(width - j);
            __m512 v = _mm512_add_ps(_mm512_maskz_loadu_ps(m, row + j), _mm512_maskz_loadu_ps(m, bias + j));
            _mm512_mask_storeu_ps(row + j, m, ts_gelu16(v));
        }
    }
}

/// LayerNorm of `rows` rows of `width` floats from `in` into `out` (which may equal `in`), biased variance as
/// PyTorch. With `bias` (else NULL), each row of `in` is first replaced by in + bias: the linear layer's bias folded
/// into the normalization's first pass over the row.
TS_AVX512_API void ts_layernorm_avx512(
    float *in, const float *bias, float *out, long rows, long width, const float *gamma, const float *beta, float eps) {
    for (long r = 0; r < rows; r++) {
        float *x = in + r * width;
        float *y = out + r * width;
        __m512 acc = _mm512_setzero_ps();
        long j = 0;
        if (bias) {
            for (; j + 16 <= width; j += 16) {
                __m512 v = _mm512_add_ps(_mm512_loadu_ps(x + j), _mm512_loadu_ps(bias + j));
                _mm512_storeu_ps(x + j, v);
                acc = _mm512_add_ps(acc, v);
            }
            if (j < width) {
                __mmask16 m = ts_tail_mask(width - j);
                __m512 v = _mm512_add_ps(_mm512_maskz_loadu_ps(m, x + j), _mm512_maskz_loadu_ps(m, bias + j));
                _mm512_mask_storeu_ps(x + j, m, v);
                acc = _mm512_add_ps(acc, v);
            }
        } else {
            for (; j + 16 <= width; j += 16) acc = _mm512_add_ps(acc, _mm512_loadu_ps(x + j));
            if (j < width) acc = _mm512_add_ps(acc, _mm512_maskz_loadu_ps(ts_tail_mask(width - j), x + j));
        }
        float mean = _mm512_reduce_add_ps(acc) / (float)width;
        __m512 mv = _mm512_set1_ps(mean);
        acc = _mm512_setzero_ps();
        for (j = 0; j + 16 <= width; j += 16) {
            __m512 d = _mm512_sub_ps(_mm512_loadu_ps(x + j), mv);
            acc = _mm512_fmadd_ps(d, d, acc);
        }
        if (j < width) {
            __mmask16 m = ts_tail_mask(width - j);
            __m512 d = _mm512_maskz_sub_ps(m, _mm512_maskz_loadu_ps(m, x + j), mv);
            acc = _mm512_fmadd_ps(d, d, acc);
        }
        __m512 inv = _mm512_set1_ps(1.0f / __builtin_sqrtf(_mm512_reduce_add_ps(acc) / (float)width + eps));
        for (j = 0; j + 16 <= width; j += 16) {
            __m512 d = _mm512_mul_ps(_mm512_sub_ps(_mm512_loadu_ps(x + j), mv), inv);
            _mm512_storeu_ps(y + j, _mm512_fmadd_ps(d, _mm512_loadu_ps(gamma + j), _mm512_loadu_ps(beta + j)));
        }
        if (j < width) {
            __mmask16 m = ts_tail_mask(width - j);
            __m512 d = _mm512_mul_ps(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, x + j), mv), inv);
            _mm512_mask_storeu_ps(y + j, m, _mm512_fmadd_ps(d, _mm512_maskz_loadu_ps(m, gamma + j), _mm512_maskz_loadu_ps(m, beta + j)));
        }
    }
}

/// Transposes 16 rows of 16 floats (`src`, row stride lds; rows at or past `valid` read as 0) into 16 rows of `dst`
/// (row stride ldd), adding bias[e] to output row e (the key bias; padded columns get it too and are masked
/// later): unpack within 128-bit lanes, then two rounds of lane shuffles.
TS_AVX512 void ts_transpose16(const float *src, long lds, long valid, const float *bias, float *dst, long ldd) {
    __m512 r[16];
    for (int i = 0; i < 16; i++) r[i] = i < valid ? _mm512_loadu_ps(src + i * lds) : _mm512_setzero_ps();
    __m512 t[16], u[16];
    for (int i = 0; i < 16; i += 2) {
        t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
        t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
    }
    for (int i = 0; i < 16; i += 4) {
        u[i] = _mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(t[i]), _mm512_castps_pd(t[i + 2])));
        u[i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(t[i]), _mm512_castps_pd(t[i + 2])));
        u[i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(t[i + 1]), _mm512_castps_pd(t[i + 3])));
        u[i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(t[i + 1]), _mm512_castps_pd(t[i + 3])));
    }
    // u[4g + e], lane L, holds column 4L + e of rows 4g ..< 4g + 4.
    for (int e = 0; e < 4; e++) {
        __m512 v = _mm512_shuffle_f32x4(u[e], u[4 + e], 0x88), w = _mm512_shuffle_f32x4(u[e], u[4 + e], 0xDD);
        __m512 x = _mm512_shuffle_f32x4(u[8 + e], u[12 + e], 0x88), y = _mm512_shuffle_f32x4(u[8 + e], u[12 + e], 0xDD);
        _mm512_storeu_ps(dst + e * ldd, _mm512_add_ps(_mm512_shuffle_f32x4(v, x, 0x88), _mm512_set1_ps(bias[e])));
        _mm512_storeu_ps(dst + (8 + e) * ldd, _mm512_add_ps(_mm512_shuffle_f32x4(v, x, 0xDD), _mm512_set1_ps(bias[8 + e])));
        _mm512_storeu_ps(dst + (4 + e) * ldd, _mm512_add_ps(_mm512_shuffle_f32x4(w, y, 0x88), _mm512_set1_ps(bias[4 + e])));
        _mm512_storeu_ps(dst + (12 + e) * ldd, _mm512_add_ps(_mm512_shuffle_f32x4(w, y, 0xDD), _mm512_set1_ps(bias[12 + e])));
    }
}

#define TS_FMA4(acc, b, v) acc = _mm512_fmadd_ps(b, v, acc)

/// Scores of 4 query rows (`rows` of them valid) against 64 columns of the transposed keys `kt` (`d × np`),
/// scaled, into `s` (row stride np). Explicit accumulators: arrays of vectors are not kept in registers here.
TS_AVX512 void ts_scores_4x64(const float *q0, const float *q1, const float *q2, const float *q3, const float *kt,
                               long np, long d, float scale, float *s, long rows) {
    __m512 a00 = _mm512_setzero_ps(), a01 = a00, a02 = a00, a03 = a00, a10 = a00, a11 = a00, a12 = a00, a13 = a00;
    __m512 a20 = a00, a21 = a00, a22 = a00, a23 = a00, a30 = a00, a31 = a00, a32 = a00, a33 = a00;
    for (long k = 0; k < d; k++) {
        const float *kr = kt + k * np;
        __m512 k0 = _mm512_loadu_ps(kr), k1 = _mm512_loadu_ps(kr + 16), k2 = _mm512_loadu_ps(kr + 32);
        __m512 k3 = _mm512_loadu_ps(kr + 48);
        __m512 b = _mm512_set1_ps(q0[k]);
        TS_FMA4(a00, b, k0); TS_FMA4(a01, b, k1); TS_FMA4(a02, b, k2); TS_FMA4(a03, b, k3);
        b = _mm512_set1_ps(q1[k]);
        TS_FMA4(a10, b, k0); TS_FMA4(a11, b, k1); TS_FMA4(a12, b, k2); TS_FMA4(a13, b, k3);
        b = _mm512_set1_ps(q2[k]);
        TS_FMA4(a20, b, k0); TS_FMA4(a21, b, k1); TS_FMA4(a22, b, k2); TS_FMA4(a23, b, k3);
        b = _mm512_set1_ps(q3[k]);
        TS_FMA4(a30, b, k0); TS_FMA4(a31, b, k1); TS_FMA4(a32, b, k2); TS_FMA4(a33, b, k3);
    }
    __m512 sc = _mm512_set1_ps(scale);
#define TS_STORE_ROW(r, x0, x1, x2, x3)                                                                           \
    _mm512_storeu_ps(s + r * np, _mm512_mul_ps(x0, sc)); _mm512_storeu_ps(s + r * np + 16, _mm512_mul_ps(x1, sc)); \
    _mm512_storeu_ps(s + r * np + 32, _mm512_mul_ps(x2, sc)); _mm512_storeu_ps(s + r * np + 48, _mm512_mul_ps(x3, sc));
    TS_STORE_ROW(0, a00, a01, a02, a03)
    if (rows > 1) { TS_STORE_ROW(1, a10, a11, a12, a13) }
    if (rows > 2) { TS_STORE_ROW(2, a20, a21, a22, a23) }
    if (rows > 3) { TS_STORE_ROW(3, a30, a31, a32, a33) }
#undef TS_STORE_ROW
}

/// Context of 8 rows (`rows` valid; unnormalized P rows `s` at stride np, `inv` their 1 / Σ) for 32 output columns:
/// inv[r] · Σⱼ P[r][j] · V[j][0 ..< 32]. 16 accumulators: 10 loads per 16 FMAs.
TS_AVX512 void ts_context_8x32(const float *s, long np, const float *inv, const float *v, long ldv, long n,
                                float *out, long ldo, long rows) {
    __m512 a00 = _mm512_setzero_ps(), a01 = a00, a10 = a00, a11 = a00, a20 = a00, a21 = a00, a30 = a00, a31 = a00;
    __m512 a40 = a00, a41 = a00, a50 = a00, a51 = a00, a60 = a00, a61 = a00, a70 = a00, a71 = a00;
    const float *p[8];
    for (int r = 0; r < 8; r++) p[r] = s + (r < rows ? r : 0) * np;
    const float *p0 = p[0], *p1 = p[1], *p2 = p[2], *p3 = p[3], *p4 = p[4], *p5 = p[5], *p6 = p[6], *p7 = p[7];
    for (long j = 0; j < n; j++) {
        __m512 v0 = _mm512_loadu_ps(v + j * ldv), v1 = _mm512_loadu_ps(v + j * ldv + 16);
        __m512 b = _mm512_set1_ps(p0[j]);
        TS_FMA4(a00, b, v0); TS_FMA4(a01, b, v1);
        b = _mm512_set1_ps(p1[j]);
        TS_FMA4(a10, b, v0); TS_FMA4(a11, b, v1);
        b = _mm512_set1_ps(p2[j]);
        TS_FMA4(a20, b, v0); TS_FMA4(a21, b, v1);
        b = _mm512_set1_ps(p3[j]);
        TS_FMA4(a30, b, v0); TS_FMA4(a31, b, v1);
        b = _mm512_set1_ps(p4[j]);
        TS_FMA4(a40, b, v0); TS_FMA4(a41, b, v1);
        b = _mm512_set1_ps(p5[j]);
        TS_FMA4(a50, b, v0); TS_FMA4(a51, b, v1);
        b = _mm512_set1_ps(p6[j]);
        TS_FMA4(a60, b, v0); TS_FMA4(a61, b, v1);
        b = _mm512_set1_ps(p7[j]);
        TS_FMA4(a70, b, v0); TS_FMA4(a71, b, v1);
    }
#define TS_STORE_CTX(r, x0, x1)                                                                                   \
    if (r < rows) {                                                                                               \
        __m512 sc = _mm512_set1_ps(inv[r]);                                                                       \
        _mm512_storeu_ps(out + r * ldo, _mm512_mul_ps(x0, sc));                                                  \
        _mm512_storeu_ps(out + r * ldo + 16, _mm512_mul_ps(x1, sc));                                             \
    }
    TS_STORE_CTX(0, a00, a01) TS_STORE_CTX(1, a10, a11) TS_STORE_CTX(2, a20, a21) TS_STORE_CTX(3, a30, a31)
    TS_STORE_CTX(4, a40, a41) TS_STORE_CTX(5, a50, a51) TS_STORE_CTX(6, a60, a61) TS_STORE_CTX(7, a70, a71)
#undef TS_STORE_CTX
}

/// The same for 16 output columns (a head size of 16 or 48), 8 rows.
TS_AVX512 void ts_context_8x16(const float *s, long np, const float *inv, const float *v, long ldv, long n,
                                float *out, long ldo, long rows) {
    __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0;
    const float *p[8];
    for (int r = 0; r < 8; r++) p[r] = s + (r < rows ? r : 0) * np;
    const float *p0 = p[0], *p1 = p[1], *p2 = p[2], *p3 = p[3], *p4 = p[4], *p5 = p[5], *p6 = p[6], *p7 = p[7];
    for (long j = 0; j < n; j++) {
        __m512 v0 = _mm512_loadu_ps(v + j * ldv);
        TS_FMA4(a0, _mm512_set1_ps(p0[j]), v0); TS_FMA4(a1, _mm512_set1_ps(p1[j]), v0);
        TS_FMA4(a2, _mm512_set1_ps(p2[j]), v0); TS_FMA4(a3, _mm512_set1_ps(p3[j]), v0);
        TS_FMA4(a4, _mm512_set1_ps(p4[j]), v0); TS_FMA4(a5, _mm512_set1_ps(p5[j]), v0);
        TS_FMA4(a6, _mm512_set1_ps(p6[j]), v0); TS_FMA4(a7, _mm512_set1_ps(p7[j]), v0);
    }
    __m512 acc[8] = {a0, a1, a2, a3, a4, a5, a6, a7};
    for (int r = 0; r < 8 && r < rows; r++) _mm512_storeu_ps(out + r * ldo, _mm512_mul_ps(acc[r], _mm512_set1_ps(inv[r])));
}

/// Floats of scratch ts_attention_avx512 needs for a sequence of n tokens and `heads` heads of size d.
long ts_attention_scratch_floats(long n, long heads, long d) {
    long np = (n + 63) & ~63L;
    return heads * (np * d + 2 * n * d) + n * np + n;
}

/// One head from packed operands: out = softmax(scale · Q Kᵀ) V with Q and V n × d, Kᵀ d × np (np = n rounded up
/// to 64; the padded columns hold junk and are excluded from the softmax by a mask), out at row stride ldo; s and
/// inv are n × np and n floats of scratch.
TS_AVX512 void ts_attention_head(const float *qp, const float *kt, const float *vp, long n, long np, long d,
                                 float scale, float *out, long ldo, float *s, float *inv) {
    for (long i = 0; i < n; i += 4) {
        long rows = n - i < 4 ? n - i : 4;
        const float *q0 = qp + i * d;
        const float *q1 = qp + (i + (rows > 1 ? 1 : 0)) * d, *q2 = qp + (i + (rows > 2 ? 2 : 0)) * d;
        const float *q3 = qp + (i + (rows > 3 ? 3 : 0)) * d;
        for (long c = 0; c < np; c += 64) ts_scores_4x64(q0, q1, q2, q3, kt + c, np, d, scale, s + i * np + c, rows);
    }
    // Softmax numerators eˢ⁻ᵐᵃˣ of each row over its n valid columns (vectors past the last valid one are never
    // read); the division by their sum is applied to the context rows (d values, not n).
    long nv = (n + 15) / 16;
    __mmask16 tail = ts_tail_mask(n - 16 * (nv - 1));
    for (long i = 0; i < n; i++) {
        float *row = s + i * np;
        __m512 mv = _mm512_set1_ps(-__builtin_inff());
        long j = 0, last = 16 * (nv - 1);
        for (; j < last; j += 16) mv = _mm512_max_ps(mv, _mm512_loadu_ps(row + j));
        mv = _mm512_mask_max_ps(mv, tail, mv, _mm512_loadu_ps(row + last));
        __m512 m = _mm512_set1_ps(_mm512_reduce_max_ps(mv));
        __m512 sum = _mm512_setzero_ps();
        for (j = 0; j < last; j += 16) {
            __m512 e = ts_exp16(_mm512_sub_ps(_mm512_loadu_ps(row + j), m));
            _mm512_storeu_ps(row + j, e);
            sum = _mm512_add_ps(sum, e);
        }
        __m512 e = _mm512_maskz_mov_ps(tail, ts_exp16(_mm512_sub_ps(_mm512_loadu_ps(row + last), m)));
        _mm512_storeu_ps(row + last, e);
        sum = _mm512_add_ps(sum, e);
        inv[i] = 1.0f / _mm512_reduce_add_ps(sum);
    }
    for (long i = 0; i < n; i += 8) {
        long rows = n - i < 8 ? n - i : 8;
        long c = 0;
        for (; c + 32 <= d; c += 32) ts_context_8x32(s + i * np, np, inv + i, vp + c, d, n, out + i * ldo + c, ldo, rows);
        if (c < d) ts_context_8x16(s + i * np, np, inv + i, vp + c, d, n, out + i * ldo + c, ldo, rows);
    }
}

/// `heads` consecutive heads of one sequence: for each, out = softmax(scale · (Q + qb)(K + kb)ᵀ) (V + vb). `q` is
/// the first head's Q in row 0 of the fused QKV product (without its bias; row stride ld, K and V `hidden` and
/// 2·hidden floats further), `bias` the first head's Q bias in the 3·hidden QKV bias, out the first head's columns
/// in row 0 of the context (row stride ldo). d must be a multiple of 16. `scratch` holds
/// ts_attention_scratch_floats(n, heads, d) floats.
///
/// All heads' Q, Kᵀ and V are first packed per head, with their bias (which spares the QKV product a bias pass),
/// in one sweep along each token row: the rows are read whole and in order, where one head at a time read 128
/// bytes per row at a 4.6 KB stride, each on its own page, and missed the cache (a fifth of this kernel's time).
TS_AVX512_API void ts_attention_avx512(
    const float *q, long ld, long n, long heads, long d, long hidden, float scale, const float *bias, float *out,
    long ldo, float *scratch) {
    if (n <= 0 || heads <= 0) return;
    long np = (n + 63) & ~63L, width = heads * d;
    float *qp = scratch, *vp = qp + heads * n * d, *kt = vp + heads * n * d, *s = kt + heads * d * np;
    float *inv = s + n * np;
    const float *k = q + hidden, *v = q + 2 * hidden;
    for (long j = 0; j < n; j++)
        for (long c = 0; c < width; c += 16) {
            long off = (c / d) * n * d + j * d + c % d;
            _mm512_storeu_ps(qp + off, _mm512_add_ps(_mm512_loadu_ps(q + j * ld + c), _mm512_loadu_ps(bias + c)));
            _mm512_storeu_ps(vp + off, _mm512_add_ps(_mm512_loadu_ps(v + j * ld + c), _mm512_loadu_ps(bias + 2 * hidden + c)));
        }
    for (long j = 0; j < np; j += 16)
        for (long c = 0; c < width; c += 16)
            ts_transpose16(k + j * ld + c, ld, n - j, bias + hidden + c, kt + (c / d) * d * np + (c % d) * np + j, np);
    for (long head = 0; head < heads; head++)
        ts_attention_head(qp + head * n * d, kt + head * d * np, vp + head * n * d, n, np, d, scale, out + head * d,
                          ldo, s, inv);
}

/// Dot products of up to 4 rows of a with up to 4 rows of w (k floats, a multiple of 16), 16-lane partial sums
/// reduced at the end; MR × NR are compile-time constants at each call so the accumulators stay in registers.
#define TS_DOT_BLOCK(MR, NR)                                                                                          \
    TS_AVX512 void ts_dot_block_##MR##x##NR(const float *a, long lda, const float *w, long ldw, float *c, long ldc, \
                                            long k, int accumulate) {                                             \
        __m512 acc[MR][NR];                                                                                       \
        for (int r = 0; r < MR; r++)                                                                              \
            for (int q = 0; q < NR; q++) acc[r][q] = _mm512_setzero_ps();                                         \
        for (long p = 0; p < k; p += 16) {                                                                        \
            __m512 wv[NR];                                                                                        \
            for (int q = 0; q < NR; q++) wv[q] = _mm512_loadu_ps(w + q * ldw + p);                                \
            for (int r = 0; r < MR; r++) {                                                                        \
                __m512 av = _mm512_loadu_ps(a + r * lda + p);                                                     \
                for (int q = 0; q < NR; q++) acc[r][q] = _mm512_fmadd_ps(av, wv[q], acc[r][q]);                   \
            }                                                                                                     \
        }                                                                                                         \
        for (int r = 0; r < MR; r++)                                                                              \
            for (int q = 0; q < NR; q++) {                                                                        \
                float v = _mm512_reduce_add_ps(acc[r][q]);                                                        \
                c[r * ldc + q] = accumulate ? c[r * ldc + q] + v : v;                                             \
            }                                                                                                     \
    }
TS_DOT_BLOCK(1, 4)
TS_DOT_BLOCK(4, 1)
TS_DOT_BLOCK(1, 1)

/// Four sums of 16 lanes at once: lane group L (4 floats) of the result holds partial sums of x[L], so two levels
/// of 128/256-bit shuffles replace four separate reductions.
TS_AVX512 __m512 ts_sum4_lanes(__m512 a, __m512 b, __m512 c, __m512 d) {
    __m512 ab = _mm512_add_ps(_mm512_shuffle_f32x4(a, b, _MM_SHUFFLE(1, 0, 1, 0)),
                              _mm512_shuffle_f32x4(a, b, _MM_SHUFFLE(3, 2, 3, 2)));
    __m512 cd = _mm512_add_ps(_mm512_shuffle_f32x4(c, d, _MM_SHUFFLE(1, 0, 1, 0)),
                              _mm512_shuffle_f32x4(c, d, _MM_SHUFFLE(3, 2, 3, 2)));
    return _mm512_add_ps(_mm512_shuffle_f32x4(ab, cd, _MM_SHUFFLE(2, 0, 2, 0)),
                         _mm512_shuffle_f32x4(ab, cd, _MM_SHUFFLE(3, 1, 3, 1)));
}

/// The 4 × 4 dot block with its 16 sums reduced together (a shuffle tree, 30 instructions instead of 16 separate
/// reductions of ~8 each): at k = 384, two thirds of a layer's products, the reductions were a quarter of the work.
TS_AVX512 void ts_dot_block_4x4(const float *a, long lda, const float *w, long ldw, float *c, long ldc, long k,
                                int accumulate) {
    __m512 acc[4][4];
    for (int r = 0; r < 4; r++)
        for (int q = 0; q < 4; q++) acc[r][q] = _mm512_setzero_ps();
    for (long p = 0; p < k; p += 16) {
        __m512 wv[4];
        for (int q = 0; q < 4; q++) wv[q] = _mm512_loadu_ps(w + q * ldw + p);
        for (int r = 0; r < 4; r++) {
            __m512 av = _mm512_loadu_ps(a + r * lda + p);
            for (int q = 0; q < 4; q++) acc[r][q] = _mm512_fmadd_ps(av, wv[q], acc[r][q]);
        }
    }
    // x[q]: lane group r holds row r's partial sums for column q.
    __m512 x[4];
    for (int q = 0; q < 4; q++) x[q] = ts_sum4_lanes(acc[0][q], acc[1][q], acc[2][q], acc[3][q]);
    // Within each lane group: element q becomes the full sum of x[q]'s 4 floats, so lane group r = row r's 4 results.
    __m512 x01 = _mm512_add_ps(_mm512_shuffle_ps(x[0], x[1], _MM_SHUFFLE(1, 0, 1, 0)),
                               _mm512_shuffle_ps(x[0], x[1], _MM_SHUFFLE(3, 2, 3, 2)));
    __m512 x23 = _mm512_add_ps(_mm512_shuffle_ps(x[2], x[3], _MM_SHUFFLE(1, 0, 1, 0)),
                               _mm512_shuffle_ps(x[2], x[3], _MM_SHUFFLE(3, 2, 3, 2)));
    __m512 sums = _mm512_add_ps(_mm512_shuffle_ps(x01, x23, _MM_SHUFFLE(2, 0, 2, 0)),
                                _mm512_shuffle_ps(x01, x23, _MM_SHUFFLE(3, 1, 3, 1)));
    __m128 rows[4] = {_mm512_extractf32x4_ps(sums, 0), _mm512_extractf32x4_ps(sums, 1),
                      _mm512_extractf32x4_ps(sums, 2), _mm512_extractf32x4_ps(sums, 3)};
    for (int r = 0; r < 4; r++) {
        __m128 v = rows[r];
        if (accumulate) v = _mm_add_ps(v, _mm_loadu_ps(c + r * ldc));
        _mm_storeu_ps(c + r * ldc, v);
    }
}

TS_AVX512_API void ts_small_gemm_nt_avx512(const float *a, long lda, const float *w, long ldw, float *c, long ldc,
                                           long m, long n, long k, int accumulate) {
    long n4 = n / 4 * 4, m4 = m / 4 * 4;
    for (long j = 0; j < n4; j += 4) {
        for (long i = 0; i < m4; i += 4)
            ts_dot_block_4x4(a + i * lda, lda, w + j * ldw, ldw, c + i * ldc + j, ldc, k, accumulate);
        for (long i = m4; i < m; i++)
            ts_dot_block_1x4(a + i * lda, lda, w + j * ldw, ldw, c + i * ldc + j, ldc, k, accumulate);
    }
    for (long j = n4; j < n; j++) {
        for (long i = 0; i < m4; i += 4)
            ts_dot_block_4x1(a + i * lda, lda, w + j * ldw, ldw, c + i * ldc + j, ldc, k, accumulate);
        for (long i = m4; i < m; i++)
            ts_dot_block_1x1(a + i * lda, lda, w + j * ldw, ldw, c + i * ldc + j, ldc, k, accumulate);
    }
}

#else
int ts_encoder_has_avx512(void) { return 0; }
void ts_gelu_avx512(float *x, long n) { (void)x; (void)n; }
void ts_bias_gelu_avx512(float *x, long rows, long width, const float *bias) {
    (void)x; (void)rows; (void)width; (void)bias;
}
void ts_layernorm_avx512(
    float *in, const float *bias, float *out, long rows, long width, const float *gamma, const float *beta, float eps) {
    (void)in; (void)bias; (void)out; (void)rows; (void)width; (void)gamma; (void)beta; (void)eps;
}
long ts_attention_scratch_floats(long n, long heads, long d) {
    (void)n; (void)heads; (void)d;
    return 0;
}
void ts_attention_avx512(
    const float *q, long ld, long n, long heads, long d, long hidden, float scale, const float *bias, float *out,
    long ldo, float *scratch) {
    (void)q; (void)ld; (void)n; (void)heads; (void)d; (void)hidden; (void)scale; (void)bias; (void)out; (void)ldo;
    (void)scratch;
}
void ts_small_gemm_nt_avx512(const float *a, long lda, const float *w, long ldw, float *c, long ldc, long m, long n,
                             long k, int accumulate) {
    (void)a; (void)lda; (void)w; (void)ldw; (void)c; (void)ldc; (void)m; (void)n; (void)k; (void)accumulate;
}
#endif
