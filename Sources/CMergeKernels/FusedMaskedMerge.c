// The masked merge pass of the generalized task arithmetic family (TIES, breadcrumbs, breadcrumbs_ties) straight
// from the mapped BF16 inputs into the BF16 output, in AVX2 with a scalar tail; see CMergeKernels.h.
//
// The Swift block path widens every input into scratch, subtracts, writes a 0/1 mask, multiplies, and sweeps the
// blocks three more times for the sign election. Here each element is loaded once and everything happens in
// registers, with the same IEEE operations in the same order (f32, separate multiply and add, contraction off):
// d = x - b; v = ((d * mask) * scale) * weight (or d * weight unmasked); sum = 0 + v_0 + v_1 ...; then either
// TIES' disjoint mean (agree = sum >= 0 ? v > 0 : v < 0; mixed += agree ? v : 0; div += agree ? w : 0;
// mixed /= div == 0 ? 1 : div) or the plain sum (/ divide), * lambda, b + result, integer round-to-nearest-even.

#include "CMergeKernels.h"
#include "BF16Rounding.h"

#include <stdint.h>
#include <string.h>

#pragma clang fp contract(off)

static inline float widen(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static inline uint32_t bits_of(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static inline uint16_t narrow(float x) {
    const uint32_t f = bits_of(x);
    if ((f & 0x7FFFFFFFu) > 0x7F800000u) return (uint16_t)(((f >> 16) & 0x8000u) | 0x7FC0u);
    return (uint16_t)((f + 0x7FFFu + ((f >> 16) & 1u)) >> 16);
}

static inline int kept(uint32_t bits, int32_t threshold, int32_t limit, int32_t offset) {
    const int32_t b = (int32_t)bits;  // sign cleared: 0 ... 0x7FFFFFFF, so a signed compare orders it
    return b > threshold || (b == threshold && offset < limit);
}

/// Element `j` (offset `j - lo` inside the call's range) by the scalar definition.
static void merge_one(const uint16_t *base, const tswitch_masked_model *models, int m, int consensus, int normalize,
                      float divide, float lambda, uint16_t *out, size_t j, int32_t offset) {
    float v[TSWITCH_MASKED_MAX_MODELS];
    const float b = widen(base[j]);
    float sum = 0;
    for (int i = 0; i < m; i++) {
        const tswitch_masked_model *p = &models[i];
        const float d = widen(((const uint16_t *)p->x)[j]) - b;
        if (p->masked) {
            const uint32_t a = bits_of(d) & 0x7FFFFFFFu;
            int keep = kept(a, p->keep_bits, p->keep_limit, offset);
            if (p->has_drop && kept(a, p->drop_bits, p->drop_limit, offset)) keep = 0;
            const float mk = keep ? 1.0f : 0.0f;
            v[i] = ((d * mk) * p->scale) * p->weight;
        } else {
            v[i] = d * p->weight;
        }
        sum += v[i];
    }
    float r;
    if (consensus) {
        float mixed = 0, div = 0;
        for (int i = 0; i < m; i++) {
            const int agree = sum >= 0 ? v[i] > 0 : v[i] < 0;
            mixed += agree ? v[i] : 0;
            div += agree ? models[i].weight : 0;
        }
        if (normalize) mixed /= div == 0 ? 1 : div;
        r = mixed;
    } else {
        r = sum;
        if (divide != 1) r /= divide;
    }
    if (lambda != 1) r *= lambda;
    out[j] = narrow(b + r);
}

static void merge_scalar(const uint16_t *base, const tswitch_masked_model *models, int m, int consensus,
                         int normalize, float divide, float lambda, uint16_t *out, size_t lo, size_t hi) {
    for (size_t j = lo; j < hi; j++)
        merge_one(base, models, m, consensus, normalize, divide, lambda, out, j, (int32_t)(j - lo));
}

#if defined(__x86_64__) && defined(__clang__)
#include <immintrin.h>

#define TSW_AVX2 __attribute__((target("avx2")))

/// All-ones lanes where |d| (bits `a`) is kept by a threshold and tie limit; `idx` are the lanes' offsets.
TSW_AVX2 static inline __m256i kept_256(__m256i a, int32_t threshold, int32_t limit, __m256i idx) {
    const __m256i t = _mm256_set1_epi32(threshold);
    const __m256i gt = _mm256_cmpgt_epi32(a, t);
    const __m256i tie = _mm256_and_si256(_mm256_cmpeq_epi32(a, t), _mm256_cmpgt_epi32(_mm256_set1_epi32(limit), idx));
    return _mm256_or_si256(gt, tie);
}

/// One half (even or odd elements) of a 16-element step: v_i and their sum, then the combined result.
TSW_AVX2 static inline __attribute__((always_inline)) __m256 half_256(__m256 b, const __m256 *x, const tswitch_masked_model *models, int m,
                                       int consensus, int normalize, float divide, float lambda, __m256i idx) {
    __m256 v[TSWITCH_MASKED_MAX_MODELS];
    const __m256 zero = _mm256_setzero_ps();
    const __m256 one = _mm256_set1_ps(1.0f);
    const __m256i absMask = _mm256_set1_epi32(0x7FFFFFFF);
    __m256 sum = zero;
    for (int i = 0; i < m; i++) {
        const tswitch_masked_model *p = &models[i];
        const __m256 d = _mm256_sub_ps(x[i], b);
        const __m256 w = _mm256_set1_ps(p->weight);
        if (p->masked) {
            const __m256i a = _mm256_and_si256(_mm256_castps_si256(d), absMask);
            __m256i keep = kept_256(a, p->keep_bits, p->keep_limit, idx);
            if (p->has_drop) keep = _mm256_andnot_si256(kept_256(a, p->drop_bits, p->drop_limit, idx), keep);
            const __m256 mk = _mm256_and_ps(_mm256_castsi256_ps(keep), one);
            v[i] = _mm256_mul_ps(_mm256_mul_ps(_mm256_mul_ps(d, mk), _mm256_set1_ps(p->scale)), w);
        } else {
            v[i] = _mm256_mul_ps(d, w);
        }
        sum = _mm256_add_ps(sum, v[i]);
    }
    __m256 r;
    if (consensus) {
        const __m256 positive = _mm256_cmp_ps(sum, zero, _CMP_GE_OQ);
        __m256 mixed = zero, div = zero;
        for (int i = 0; i < m; i++) {
            const __m256 agree = _mm256_blendv_ps(_mm256_cmp_ps(v[i], zero, _CMP_LT_OQ),
                                                  _mm256_cmp_ps(v[i], zero, _CMP_GT_OQ), positive);
            mixed = _mm256_add_ps(mixed, _mm256_and_ps(agree, v[i]));
            div = _mm256_add_ps(div, _mm256_and_ps(agree, _mm256_set1_ps(models[i].weight)));
        }
        if (normalize) mixed = _mm256_div_ps(mixed, _mm256_blendv_ps(div, one, _mm256_cmp_ps(div, zero, _CMP_EQ_OQ)));
        r = mixed;
    } else {
        r = sum;
        if (divide != 1) r = _mm256_div_ps(r, _mm256_set1_ps(divide));
    }
    if (lambda != 1) r = _mm256_mul_ps(r, _mm256_set1_ps(lambda));
    return _mm256_add_ps(b, r);
}

TSW_AVX2 static inline __attribute__((always_inline)) void merge_256(const uint16_t *base, const tswitch_masked_model *models, int m, int consensus,
                               int normalize, float divide, float lambda, uint16_t *out, size_t lo, size_t hi) {
    const __m256i high = _mm256_set1_epi32((int)0xFFFF0000u);
    const __m256i lanes = _mm256_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14);
    __m256 x0[TSWITCH_MASKED_MAX_MODELS], x1[TSWITCH_MASKED_MAX_MODELS];
    size_t j = lo;
    for (; j + 16 <= hi; j += 16) {
        const __m256i wb = _mm256_loadu_si256((const __m256i *)(base + j));
        const __m256 b0 = _mm256_castsi256_ps(_mm256_slli_epi32(wb, 16));
        const __m256 b1 = _mm256_castsi256_ps(_mm256_and_si256(wb, high));
        for (int i = 0; i < m; i++) {
            const __m256i wx = _mm256_loadu_si256((const __m256i *)((const uint16_t *)models[i].x + j));
            x0[i] = _mm256_castsi256_ps(_mm256_slli_epi32(wx, 16));
            x1[i] = _mm256_castsi256_ps(_mm256_and_si256(wx, high));
        }
        const __m256i idx0 = _mm256_add_epi32(_mm256_set1_epi32((int32_t)(j - lo)), lanes);
        const __m256i idx1 = _mm256_add_epi32(idx0, _mm256_set1_epi32(1));
        const __m256 r0 = half_256(b0, x0, models, m, consensus, normalize, divide, lambda, idx0);
        const __m256 r1 = half_256(b1, x1, models, m, consensus, normalize, divide, lambda, idx1);
        const __m256i words =
            _mm256_or_si256(_mm256_srli_epi32(tsw_round_top_256(r0), 16), _mm256_and_si256(tsw_round_top_256(r1), high));
        _mm256_storeu_si256((__m256i *)(out + j), words);
    }
    for (; j < hi; j++) merge_one(base, models, m, consensus, normalize, divide, lambda, out, j, (int32_t)(j - lo));
}

#define TSW_AVX512 __attribute__((target("avx512f,avx512bw")))

/// `kept_256` for 16 lanes, as a mask.
TSW_AVX512 static inline __mmask16 kept_512(__m512i a, int32_t threshold, int32_t limit, __m512i idx) {
    const __m512i t = _mm512_set1_epi32(threshold);
    const __mmask16 gt = _mm512_cmpgt_epi32_mask(a, t);
    const __mmask16 tie = _mm512_mask_cmpgt_epi32_mask(_mm512_cmpeq_epi32_mask(a, t), _mm512_set1_epi32(limit), idx);
    return gt | tie;
}

/// `half_256` for 16 lanes: the same operations in the same order (a dropped entry is multiplied by 0.0, a
/// disagreeing one adds +0.0).
TSW_AVX512 static inline __attribute__((always_inline)) __m512 half_512(__m512 b, const __m512 *x, const tswitch_masked_model *models, int m,
                                         int consensus, int normalize, float divide, float lambda, __m512i idx) {
    __m512 v[TSWITCH_MASKED_MAX_MODELS];
    const __m512 zero = _mm512_setzero_ps();
    const __m512 one = _mm512_set1_ps(1.0f);
    const __m512i absMask = _mm512_set1_epi32(0x7FFFFFFF);
    __m512 sum = zero;
    for (int i = 0; i < m; i++) {
        const tswitch_masked_model *p = &models[i];
        const __m512 d = _mm512_sub_ps(x[i], b);
        const __m512 w = _mm512_set1_ps(p->weight);
        if (p->masked) {
            const __m512i a = _mm512_and_si512(_mm512_castps_si512(d), absMask);
            __mmask16 keep = kept_512(a, p->keep_bits, p->keep_limit, idx);
            if (p->has_drop) keep &= (__mmask16)~kept_512(a, p->drop_bits, p->drop_limit, idx);
            const __m512 mk = _mm512_maskz_mov_ps(keep, one);
            v[i] = _mm512_mul_ps(_mm512_mul_ps(_mm512_mul_ps(d, mk), _mm512_set1_ps(p->scale)), w);
        } else {
            v[i] = _mm512_mul_ps(d, w);
        }
        sum = _mm512_add_ps(sum, v[i]);
    }
    __m512 r;
    if (consensus) {
        const __mmask16 positive = _mm512_cmp_ps_mask(sum, zero, _CMP_GE_OQ);
        __m512 mixed = zero, div = zero;
        for (int i = 0; i < m; i++) {
            const __mmask16 agree = (__mmask16)((positive & _mm512_cmp_ps_mask(v[i], zero, _CMP_GT_OQ)) |
                                                (~positive & _mm512_cmp_ps_mask(v[i], zero, _CMP_LT_OQ)));
            mixed = _mm512_add_ps(mixed, _mm512_maskz_mov_ps(agree, v[i]));
            div = _mm512_add_ps(div, _mm512_maskz_mov_ps(agree, _mm512_set1_ps(models[i].weight)));
        }
        if (normalize) mixed = _mm512_div_ps(mixed, _mm512_mask_blend_ps(_mm512_cmp_ps_mask(div, zero, _CMP_EQ_OQ), div, one));
        r = mixed;
    } else {
        r = sum;
        if (divide != 1) r = _mm512_div_ps(r, _mm512_set1_ps(divide));
    }
    if (lambda != 1) r = _mm512_mul_ps(r, _mm512_set1_ps(lambda));
    return _mm512_add_ps(b, r);
}

/// `merge_256` 32 elements a step.
TSW_AVX512 static inline __attribute__((always_inline)) void merge_512(const uint16_t *base, const tswitch_masked_model *models, int m, int consensus,
                                 int normalize, float divide, float lambda, uint16_t *out, size_t lo, size_t hi) {
    const __m512i high = _mm512_set1_epi32((int)0xFFFF0000u);
    const __m512i lanes = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    __m512 x0[TSWITCH_MASKED_MAX_MODELS], x1[TSWITCH_MASKED_MAX_MODELS];
    size_t j = lo;
    for (; j + 32 <= hi; j += 32) {
        const __m512i wb = _mm512_loadu_si512((const void *)(base + j));
        const __m512 b0 = _mm512_castsi512_ps(_mm512_slli_epi32(wb, 16));
        const __m512 b1 = _mm512_castsi512_ps(_mm512_and_si512(wb, high));
        for (int i = 0; i < m; i++) {
            const __m512i wx = _mm512_loadu_si512((const void *)((const uint16_t *)models[i].x + j));
            x0[i] = _mm512_castsi512_ps(_mm512_slli_epi32(wx, 16));
            x1[i] = _mm512_castsi512_ps(_mm512_and_si512(wx, high));
        }
        const __m512i idx0 = _mm512_add_epi32(_mm512_set1_epi32((int32_t)(j - lo)), lanes);
        const __m512i idx1 = _mm512_add_epi32(idx0, _mm512_set1_epi32(1));
        const __m512 r0 = half_512(b0, x0, models, m, consensus, normalize, divide, lambda, idx0);
        const __m512 r1 = half_512(b1, x1, models, m, consensus, normalize, divide, lambda, idx1);
        const __m512i words =
            _mm512_or_si512(_mm512_srli_epi32(tsw_round_top_512(r0), 16), _mm512_and_si512(tsw_round_top_512(r1), high));
        _mm512_storeu_si512((void *)(out + j), words);
    }
    for (; j < hi; j++) merge_one(base, models, m, consensus, normalize, divide, lambda, out, j, (int32_t)(j - lo));
}

// The loops inlined with the model count a constant for the usual 2 and 3 models (unrolled, the per-model values
// kept in registers), and once more for any count.
#define TSW_MERGE_VARIANT(name, body, attr, count)                                                                  \
    attr static void name(const uint16_t *base, const tswitch_masked_model *models, int m, int consensus,          \
                          int normalize, float divide, float lambda, uint16_t *out, size_t lo, size_t hi) {        \
        (void)m;                                                                                                  \
        body(base, models, count, consensus, normalize, divide, lambda, out, lo, hi);                             \
    }
TSW_MERGE_VARIANT(merge_512_2, merge_512, TSW_AVX512, 2)
TSW_MERGE_VARIANT(merge_512_3, merge_512, TSW_AVX512, 3)
TSW_MERGE_VARIANT(merge_512_any, merge_512, TSW_AVX512, m)
TSW_MERGE_VARIANT(merge_256_2, merge_256, TSW_AVX2, 2)
TSW_MERGE_VARIANT(merge_256_3, merge_256, TSW_AVX2, 3)
TSW_MERGE_VARIANT(merge_256_any, merge_256, TSW_AVX2, m)

void tswitch_masked_merge_bf16(int level, const void *base, const tswitch_masked_model *models, int m, int consensus,
                               int normalize, float divide, float lambda, void *out, size_t lo, size_t hi) {
    if (m < 0 || m > TSWITCH_MASKED_MAX_MODELS) __builtin_trap();
    if (level >= 2) {
        (m == 3   ? merge_512_3
         : m == 2 ? merge_512_2
                  : merge_512_any)(base, models, m, consensus, normalize, divide, lambda, out, lo, hi);
    } else if (level >= 1) {
        (m == 3   ? merge_256_3
         : m == 2 ? merge_256_2
                  : merge_256_any)(base, models, m, consensus, normalize, divide, lambda, out, lo, hi);
    } else {
        merge_scalar(base, models, m, consensus, normalize, divide, lambda, out, lo, hi);
    }
}

#else

void tswitch_masked_merge_bf16(int level, const void *base, const tswitch_masked_model *models, int m, int consensus,
                               int normalize, float divide, float lambda, void *out, size_t lo, size_t hi) {
    (void)level;
    if (m < 0 || m > TSWITCH_MASKED_MAX_MODELS) __builtin_trap();
    merge_scalar(base, models, m, consensus, normalize, divide, lambda, out, lo, hi);
}

#endif

// ---- The level-1 magnitude histogram of TIES' top-k straight from BF16 (see CMergeKernels.h). ----

#define TSW_L1_BUCKETS 32768

static inline void level1_one(uint32_t a, uint32_t *hist, const uint32_t *lowest, const uint32_t *width, int bands,
                              uint64_t tag, uint64_t *const *members, size_t *counts) {
    const uint32_t bucket = a >> 16;
    hist[bucket] += 1;
    for (int q = 0; q < bands; q++)
        if (bucket - lowest[q] <= width[q]) members[q][counts[q]++] = tag | a;
}

static void level1_scalar(const uint16_t *base, const uint16_t *x, size_t lo, size_t hi, uint32_t *hist,
                          const uint32_t *lowest, const uint32_t *width, int bands, uint64_t tag,
                          uint64_t *const *members, size_t *counts) {
    for (size_t j = lo; j < hi; j++) {
        const uint32_t a = bits_of(widen(x[j]) - widen(base[j])) & 0x7FFFFFFFu;
        level1_one(a, hist, lowest, width, bands, tag, members, counts);
    }
}

#if defined(__x86_64__) && defined(__clang__)

TSW_AVX2 static void level1_256(const uint16_t *base, const uint16_t *x, size_t lo, size_t hi, uint32_t *hist,
                                int copies, const uint32_t *lowest, const uint32_t *width, int bands, uint64_t tag,
                                uint64_t *const *members, size_t *counts) {
    uint32_t table[16];
    for (int l = 0; l < 16; l++) table[l] = (uint32_t)(l % copies) * TSW_L1_BUCKETS;
    // Unsigned "bucket - lowest <= width" as a signed compare after flipping the top bit.
    const __m256i flip = _mm256_set1_epi32((int)0x80000000u);
    __m256i low[2], wid[2];
    for (int q = 0; q < bands; q++) {
        low[q] = _mm256_set1_epi32((int32_t)lowest[q]);
        wid[q] = _mm256_set1_epi32((int32_t)(width[q] ^ 0x80000000u));
    }
    uint32_t a[16];
    size_t j = lo;
    for (; j + 16 <= hi; j += 16) {
        __m256i a0, a1;
        tsw_abs_delta_256(base + j, x + j, &a0, &a1);
        _mm256_storeu_si256((__m256i *)a, a0);
        _mm256_storeu_si256((__m256i *)(a + 8), a1);
        // Lane l counts into table l % copies: neighbouring elements mostly share a bucket, and with one table
        // each increment waited for the previous one's store.
        for (int l = 0; l < 16; l++) hist[table[l] + (a[l] >> 16)] += 1;
        for (int q = 0; q < bands; q++) {
            const __m256i k0 = _mm256_srli_epi32(a0, 16), k1 = _mm256_srli_epi32(a1, 16);
            const __m256i out0 = _mm256_cmpgt_epi32(_mm256_xor_si256(_mm256_sub_epi32(k0, low[q]), flip), wid[q]);
            const __m256i out1 = _mm256_cmpgt_epi32(_mm256_xor_si256(_mm256_sub_epi32(k1, low[q]), flip), wid[q]);
            const unsigned in = ~((unsigned)_mm256_movemask_ps(_mm256_castsi256_ps(out0)) |
                                  ((unsigned)_mm256_movemask_ps(_mm256_castsi256_ps(out1)) << 8)) & 0xFFFFu;
            for (unsigned bitsLeft = in; bitsLeft; bitsLeft &= bitsLeft - 1)
                members[q][counts[q]++] = tag | a[__builtin_ctz(bitsLeft)];
        }
    }
    for (; j < hi; j++) {
        const uint32_t v = bits_of(widen(x[j]) - widen(base[j])) & 0x7FFFFFFFu;
        level1_one(v, hist, lowest, width, bands, tag, members, counts);
    }
}

#endif

void tswitch_level1_bf16(int level, const void *base, const void *x, size_t lo, size_t hi, uint32_t *histogram,
                         int copies, const uint32_t *lowest, const uint32_t *highest, int bands, uint64_t tag,
                         uint64_t *const *members, size_t *counts) {
    if (bands < 0 || bands > 2 || copies < 1 || copies > 16) __builtin_trap();
    uint32_t width[2] = {0, 0};
    for (int q = 0; q < bands; q++) {
        width[q] = highest[q] - lowest[q];
        counts[q] = 0;
    }
#if defined(__x86_64__) && defined(__clang__)
    if (level >= 1) {
        level1_256(base, x, lo, hi, histogram, copies, lowest, width, bands, tag, members, counts);
        return;
    }
#endif
    (void)level;
    level1_scalar(base, x, lo, hi, histogram, lowest, width, bands, tag, members, counts);
}
