// The fused BF16 merge loop of `FusedStream` (TensorKernels) in AVX-512 and AVX2; see CMergeKernels.h.
//
// Layout as in the Swift loop: a 32-bit word holds elements 2j and 2j+1; the even one widens with a shift, the odd
// one with a mask, and the pair narrows back into one word. Only lane-wise operations, so the vector width does not
// change any result. Separate multiply and add intrinsics (never FMA, contraction off) keep the f32 rounding of
// the Swift code: acc = 0; acc += (x_i - b) * w_i in input order; acc /= divide; acc *= lambda; b + acc.

#include "CMergeKernels.h"
#include "BF16Rounding.h"

#include <stdint.h>
#include <string.h>

#pragma clang fp contract(off)

#if defined(__x86_64__) && defined(__clang__)
#include <immintrin.h>

#define TSW_AVX512 __attribute__((target("avx512f,avx512bw")))
#define TSW_AVX2 __attribute__((target("avx2")))

/// Round to nearest even into the top 16 bits; NaN (magnitude above 0x7F800000) becomes 0x7FC0 with its sign.
TSW_AVX512 static inline __m512i round_top_512(__m512 x) {
    const __m512i f = _mm512_castps_si512(x);
    const __m512i rounded = _mm512_add_epi32(
        _mm512_add_epi32(f, _mm512_set1_epi32(0x7FFF)), _mm512_and_si512(_mm512_srli_epi32(f, 16), _mm512_set1_epi32(1)));
    const __m512i nan = _mm512_or_si512(_mm512_and_si512(f, _mm512_set1_epi32((int)0x80000000u)),
                                        _mm512_set1_epi32(0x7FC00000));
    const __mmask16 isNaN = _mm512_cmpgt_epu32_mask(_mm512_and_si512(f, _mm512_set1_epi32(0x7FFFFFFF)),
                                                    _mm512_set1_epi32(0x7F800000));
    return _mm512_mask_blend_epi32(isNaN, rounded, nan);
}

/// 16 words (32 elements) from word index `w`, or the `mask`ed low words of them (masked lanes are not touched).
TSW_AVX512 static inline void step_512(const uint8_t *base, const uint8_t *const *models, const float *weights, int m,
                                       float divide, float lambda, uint8_t *out, size_t w, __mmask16 mask) {
    const __m512i high = _mm512_set1_epi32((int)0xFFFF0000u);
    __m512 b0 = _mm512_setzero_ps(), b1 = _mm512_setzero_ps();
    if (base) {
        const __m512i wb = _mm512_maskz_loadu_epi32(mask, base + 4 * w);
        b0 = _mm512_castsi512_ps(_mm512_slli_epi32(wb, 16));
        b1 = _mm512_castsi512_ps(_mm512_and_si512(wb, high));
    }
    __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps();
    for (int i = 0; i < m; i++) {
        const __m512i wx = _mm512_maskz_loadu_epi32(mask, models[i] + 4 * w);
        __m512 x0 = _mm512_castsi512_ps(_mm512_slli_epi32(wx, 16));
        __m512 x1 = _mm512_castsi512_ps(_mm512_and_si512(wx, high));
        if (base) {
            x0 = _mm512_sub_ps(x0, b0);
            x1 = _mm512_sub_ps(x1, b1);
        }
        const __m512 wv = _mm512_set1_ps(weights[i]);
        a0 = _mm512_add_ps(a0, _mm512_mul_ps(x0, wv));
        a1 = _mm512_add_ps(a1, _mm512_mul_ps(x1, wv));
    }
    if (divide != 1) {
        const __m512 d = _mm512_set1_ps(divide);
        a0 = _mm512_div_ps(a0, d);
        a1 = _mm512_div_ps(a1, d);
    }
    if (base) {
        if (lambda != 1) {
            const __m512 l = _mm512_set1_ps(lambda);
            a0 = _mm512_mul_ps(a0, l);
            a1 = _mm512_mul_ps(a1, l);
        }
        a0 = _mm512_add_ps(b0, a0);
        a1 = _mm512_add_ps(b1, a1);
    }
    const __m512i words = _mm512_or_si512(_mm512_srli_epi32(round_top_512(a0), 16),
                                          _mm512_and_si512(round_top_512(a1), high));
    _mm512_mask_storeu_epi32(out + 4 * w, mask, words);
}

TSW_AVX512 static void fused_512(const uint8_t *base, const uint8_t *const *models, const float *weights, int m,
                                 float divide, float lambda, uint8_t *out, size_t lo, size_t hi) {
    size_t w = lo / 2, end = hi / 2;
    for (; w + 16 <= end; w += 16) step_512(base, models, weights, m, divide, lambda, out, w, 0xFFFF);
    if (w < end) step_512(base, models, weights, m, divide, lambda, out, w, (__mmask16)((1u << (end - w)) - 1));
}

TSW_AVX2 static void fused_256(const uint8_t *base, const uint8_t *const *models, const float *weights, int m,
                               float divide, float lambda, uint8_t *out, size_t lo, size_t hi) {
    const __m256i high = _mm256_set1_epi32((int)0xFFFF0000u);
    for (size_t w = lo / 2; w + 8 <= hi / 2; w += 8) {
        __m256 b0 = _mm256_setzero_ps(), b1 = _mm256_setzero_ps();
        if (base) {
            const __m256i wb = _mm256_loadu_si256((const __m256i *)(base + 4 * w));
            b0 = _mm256_castsi256_ps(_mm256_slli_epi32(wb, 16));
            b1 = _mm256_castsi256_ps(_mm256_and_si256(wb, high));
        }
        __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
        for (int i = 0; i < m; i++) {
            const __m256i wx = _mm256_loadu_si256((const __m256i *)(models[i] + 4 * w));
            __m256 x0 = _mm256_castsi256_ps(_mm256_slli_epi32(wx, 16));
            __m256 x1 = _mm256_castsi256_ps(_mm256_and_si256(wx, high));
            if (base) {
                x0 = _mm256_sub_ps(x0, b0);
                x1 = _mm256_sub_ps(x1, b1);
            }
            const __m256 wv = _mm256_set1_ps(weights[i]);
            a0 = _mm256_add_ps(a0, _mm256_mul_ps(x0, wv));
            a1 = _mm256_add_ps(a1, _mm256_mul_ps(x1, wv));
        }
        if (divide != 1) {
            const __m256 d = _mm256_set1_ps(divide);
            a0 = _mm256_div_ps(a0, d);
            a1 = _mm256_div_ps(a1, d);
        }
        if (base) {
            if (lambda != 1) {
                const __m256 l = _mm256_set1_ps(lambda);
                a0 = _mm256_mul_ps(a0, l);
                a1 = _mm256_mul_ps(a1, l);
            }
            a0 = _mm256_add_ps(b0, a0);
            a1 = _mm256_add_ps(b1, a1);
        }
        const __m256i words = _mm256_or_si256(_mm256_srli_epi32(tsw_round_top_256(a0), 16),
                                              _mm256_and_si256(tsw_round_top_256(a1), high));
        _mm256_storeu_si256((__m256i *)(out + 4 * w), words);
    }
}

int tswitch_fused_level(void) {
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw")) return 2;
    if (__builtin_cpu_supports("avx2")) return 1;
    return 0;
}

void tswitch_fused_bf16(int level, const void *base, const void *const *models, const float *weights, int m,
                        float divide, float lambda, void *out, size_t lo, size_t hi) {
    if (level >= 2) {
        fused_512(base, (const uint8_t *const *)models, weights, m, divide, lambda, out, lo, hi);
    } else if (level == 1) {
        fused_256(base, (const uint8_t *const *)models, weights, m, divide, lambda, out, lo, hi);
    } else {
        __builtin_trap();  // level 0: the caller runs its portable loop
    }
}

#else

int tswitch_fused_level(void) { return 0; }

void tswitch_fused_bf16(int level, const void *base, const void *const *models, const float *weights, int m,
                        float divide, float lambda, void *out, size_t lo, size_t hi) {
    (void)level, (void)base, (void)models, (void)weights, (void)m, (void)divide, (void)lambda, (void)out, (void)lo,
        (void)hi;
    __builtin_trap();  // no vector level on this architecture; callers check tswitch_fused_level() first
}

#endif
