// The band pass of TIES' top-k straight from BF16 (see CMergeKernels.h): per element one compare against each
// band's upper edge (counted) and one against its lower edge (members stored), instead of the level-1 histogram's
// scalar increment per element. AVX-512, AVX2 and a scalar loop; all give the same counts and member sets.

#include "CMergeKernels.h"

#include <stdint.h>
#include <string.h>

#pragma clang fp contract(off)

static inline uint32_t magnitude_bits(uint16_t x, uint16_t b) {
    const uint32_t ux = (uint32_t)x << 16, ub = (uint32_t)b << 16;
    float fx, fb;
    memcpy(&fx, &ux, 4);
    memcpy(&fb, &ub, 4);
    const float d = fx - fb;
    uint32_t u;
    memcpy(&u, &d, 4);
    return u & 0x7FFFFFFFu;
}

/// Band q as |d| bits: members are lo[q] <= a <= hi[q], "above" is a > hi[q] (a <= 0x7FFFFFFF, so signed
/// compares order them; lo[q] - 1 >= -1).
typedef struct {
    int32_t below;  // lowest bucket << 16, minus 1
    int32_t top;    // highest bucket << 16 | 0xFFFF
} band_edges;

static void band_scalar(const uint16_t *base, const uint16_t *x, size_t lo, size_t hi, const band_edges *e,
                        int bands, uint64_t tag, uint64_t *const *members, size_t *counts, uint64_t *above) {
    for (size_t j = lo; j < hi; j++) {
        const int32_t a = (int32_t)magnitude_bits(x[j], base[j]);
        for (int q = 0; q < bands; q++) {
            if (a > e[q].top) {
                above[q] += 1;
            } else if (a > e[q].below) {
                members[q][counts[q]++] = tag | (uint32_t)a;
            }
        }
    }
}

#if defined(__x86_64__) && defined(__clang__)
#include <immintrin.h>

#include "BF16Rounding.h"

#define TSW_AVX2 __attribute__((target("avx2")))
#define TSW_AVX512 __attribute__((target("avx512f,avx512bw")))

TSW_AVX2 static void band_256(const uint16_t *base, const uint16_t *x, size_t lo, size_t hi, const band_edges *e,
                              int bands, uint64_t tag, uint64_t *const *members, size_t *counts, uint64_t *above) {
    __m256i top[2], below[2], acc[2];
    for (int q = 0; q < bands; q++) {
        top[q] = _mm256_set1_epi32(e[q].top);
        below[q] = _mm256_set1_epi32(e[q].below);
        acc[q] = _mm256_setzero_si256();
    }
    uint32_t a[16];
    size_t j = lo;
    for (; j + 16 <= hi; j += 16) {
        __m256i a0, a1;
        tsw_abs_delta_256(base + j, x + j, &a0, &a1);
        for (int q = 0; q < bands; q++) {
            const __m256i up0 = _mm256_cmpgt_epi32(a0, top[q]), up1 = _mm256_cmpgt_epi32(a1, top[q]);
            acc[q] = _mm256_sub_epi32(_mm256_sub_epi32(acc[q], up0), up1);
            const __m256i in0 = _mm256_andnot_si256(up0, _mm256_cmpgt_epi32(a0, below[q]));
            const __m256i in1 = _mm256_andnot_si256(up1, _mm256_cmpgt_epi32(a1, below[q]));
            const unsigned in = (unsigned)_mm256_movemask_ps(_mm256_castsi256_ps(in0)) |
                                ((unsigned)_mm256_movemask_ps(_mm256_castsi256_ps(in1)) << 8);
            if (in) {
                _mm256_storeu_si256((__m256i *)a, a0);
                _mm256_storeu_si256((__m256i *)(a + 8), a1);
                for (unsigned left = in; left; left &= left - 1) members[q][counts[q]++] = tag | a[__builtin_ctz(left)];
            }
        }
    }
    for (int q = 0; q < bands; q++) {
        uint32_t lanes[8];
        _mm256_storeu_si256((__m256i *)lanes, acc[q]);
        for (int l = 0; l < 8; l++) above[q] += lanes[l];
    }
    band_scalar(base, x, j, hi, e, bands, tag, members, counts, above);
}

/// 32 elements a step; members leave through an in-register compress and two full-width stores of 8 (the store
/// to memory form is slow on some cores). Safe: before a half of 16 elements at most j - lo + 16 entries are
/// written, its stores end 16 further on, at most at j + 32 - lo <= hi - lo, the buffer's room.
TSW_AVX512 static void band_512(const uint16_t *base, const uint16_t *x, size_t lo, size_t hi, const band_edges *e,
                                int bands, uint64_t tag, uint64_t *const *members, size_t *counts, uint64_t *above) {
    const __m512i tags = _mm512_set1_epi64((long long)tag);
    __m512i top[2], below[2];
    uint64_t up[2] = {0, 0};
    for (int q = 0; q < bands; q++) {
        top[q] = _mm512_set1_epi32(e[q].top);
        below[q] = _mm512_set1_epi32(e[q].below);
    }
    size_t j = lo;
    for (; j + 32 <= hi; j += 32) {
        __m512i a0, a1;
        tsw_abs_delta_512(base + j, x + j, &a0, &a1);
        for (int q = 0; q < bands; q++) {
            const __mmask16 up0 = _mm512_cmpgt_epi32_mask(a0, top[q]), up1 = _mm512_cmpgt_epi32_mask(a1, top[q]);
            up[q] += (uint64_t)__builtin_popcount(up0) + (uint64_t)__builtin_popcount(up1);
            const __mmask16 in0 = _mm512_mask_cmpgt_epi32_mask((__mmask16)~up0, a0, below[q]);
            const __mmask16 in1 = _mm512_mask_cmpgt_epi32_mask((__mmask16)~up1, a1, below[q]);
            // Branch-free where a few percent of the entries are members ("any member in these 32" is then a coin
            // flip); a band that has collected fewer than 1 in 64 so far (breadcrumbs' outlier band) skips empty
            // steps instead, where the branch predicts well. Either way the same members are stored.
            if ((in0 | in1) == 0 && counts[q] * 64 < j - lo) continue;
            const __m512i halves[2] = {a0, a1};
            const __mmask16 ins[2] = {in0, in1};
            for (int h = 0; h < 2; h++) {
                const __m512i packed = _mm512_maskz_compress_epi32(ins[h], halves[h]);
                uint64_t *dst = members[q] + counts[q];
                _mm512_storeu_si512((void *)dst,
                                    _mm512_or_si512(tags, _mm512_cvtepu32_epi64(_mm512_castsi512_si256(packed))));
                _mm512_storeu_si512((void *)(dst + 8),
                                    _mm512_or_si512(tags, _mm512_cvtepu32_epi64(_mm512_extracti64x4_epi64(packed, 1))));
                counts[q] += (size_t)__builtin_popcount(ins[h]);
            }
        }
    }
    for (int q = 0; q < bands; q++) above[q] += up[q];
    band_scalar(base, x, j, hi, e, bands, tag, members, counts, above);
}

#endif

/// Adds the bucket of each of this call's members (hot in cache) to the band's histogram.
static void count_buckets(const uint64_t *members, size_t count, uint32_t lowest, uint32_t *histogram) {
    for (size_t i = 0; i < count; i++) histogram[((uint32_t)members[i] >> 16) - lowest] += 1;
}

void tswitch_band_count_bf16(int level, const void *base, const void *x, size_t lo, size_t hi,
                             const uint32_t *lowest, const uint32_t *highest, int bands, uint64_t tag,
                             uint64_t *const *members, size_t *counts, uint64_t *above, uint32_t *const *histograms) {
    if (bands < 1 || bands > 2) __builtin_trap();
    band_edges e[2];
    for (int q = 0; q < bands; q++) {
        if (lowest[q] > highest[q] || highest[q] > 0x7FFFu) __builtin_trap();
        e[q].below = (int32_t)(lowest[q] << 16) - 1;
        e[q].top = (int32_t)(highest[q] << 16 | 0xFFFFu);
        counts[q] = 0;
        above[q] = 0;
    }
#if defined(__x86_64__) && defined(__clang__)
    if (level >= 2) {
        band_512(base, x, lo, hi, e, bands, tag, members, counts, above);
    } else if (level >= 1) {
        band_256(base, x, lo, hi, e, bands, tag, members, counts, above);
    } else
#endif
    {
        (void)level;
        band_scalar(base, x, lo, hi, e, bands, tag, members, counts, above);
    }
    for (int q = 0; q < bands; q++)
        if (histograms && histograms[q]) count_buckets(members[q], counts[q], lowest[q], histograms[q]);
}
