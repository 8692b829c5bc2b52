// Private to CMergeKernels: f32 → BF16 round-to-nearest-even of 8 lanes, as the merge kernels' outputs are written
// (NaN kept quiet with its sign; the result holds the BF16 bits in each lane's top half), and the |x − base| bit
// patterns of 16 BF16 pairs the top-k passes read.
#ifndef TSWITCH_BF16_ROUNDING_H
#define TSWITCH_BF16_ROUNDING_H

#if defined(__x86_64__) && defined(__clang__)
#include <immintrin.h>
#include <stdint.h>

__attribute__((target("avx2"))) static inline __m256i tsw_round_top_256(__m256 x) {
    const __m256i f = _mm256_castps_si256(x);
    const __m256i rounded = _mm256_add_epi32(
        _mm256_add_epi32(f, _mm256_set1_epi32(0x7FFF)), _mm256_and_si256(_mm256_srli_epi32(f, 16), _mm256_set1_epi32(1)));
    const __m256i nan = _mm256_or_si256(_mm256_and_si256(f, _mm256_set1_epi32((int)0x80000000u)),
                                        _mm256_set1_epi32(0x7FC00000));
    const __m256i magnitude = _mm256_and_si256(f, _mm256_set1_epi32(0x7FFFFFFF));
    const __m256i isNaN = _mm256_cmpgt_epi32(magnitude, _mm256_set1_epi32(0x7F800000));
    return _mm256_blendv_epi8(rounded, nan, isNaN);
}

/// `tsw_round_top_256` for 16 lanes.
__attribute__((target("avx512f,avx512bw"))) static inline __m512i tsw_round_top_512(__m512 x) {
    const __m512i f = _mm512_castps_si512(x);
    const __m512i rounded = _mm512_add_epi32(
        _mm512_add_epi32(f, _mm512_set1_epi32(0x7FFF)), _mm512_and_si512(_mm512_srli_epi32(f, 16), _mm512_set1_epi32(1)));
    const __m512i nan = _mm512_or_si512(_mm512_and_si512(f, _mm512_set1_epi32((int)0x80000000u)),
                                        _mm512_set1_epi32(0x7FC00000));
    const __m512i magnitude = _mm512_and_si512(f, _mm512_set1_epi32(0x7FFFFFFF));
    const __mmask16 isNaN = _mm512_cmpgt_epi32_mask(magnitude, _mm512_set1_epi32(0x7F800000));
    return _mm512_mask_blend_epi32(isNaN, rounded, nan);
}

/// |x − base| in f32 of 16 BF16 elements as bit patterns (sign cleared, so they order like the magnitudes):
/// `even` holds elements 0, 2, …, 14 (each word's low half widened), `odd` elements 1, 3, …, 15.
__attribute__((target("avx2"))) static inline void tsw_abs_delta_256(
    const uint16_t *base, const uint16_t *x, __m256i *even, __m256i *odd) {
    const __m256i high = _mm256_set1_epi32((int)0xFFFF0000u);
    const __m256i absMask = _mm256_set1_epi32(0x7FFFFFFF);
    const __m256i wb = _mm256_loadu_si256((const __m256i *)base);
    const __m256i wx = _mm256_loadu_si256((const __m256i *)x);
    const __m256 d0 = _mm256_sub_ps(_mm256_castsi256_ps(_mm256_slli_epi32(wx, 16)),
                                    _mm256_castsi256_ps(_mm256_slli_epi32(wb, 16)));
    const __m256 d1 = _mm256_sub_ps(_mm256_castsi256_ps(_mm256_and_si256(wx, high)),
                                    _mm256_castsi256_ps(_mm256_and_si256(wb, high)));
    *even = _mm256_and_si256(_mm256_castps_si256(d0), absMask);
    *odd = _mm256_and_si256(_mm256_castps_si256(d1), absMask);
}

/// `tsw_abs_delta_256` for 32 elements.
__attribute__((target("avx512f,avx512bw"))) static inline void tsw_abs_delta_512(
    const uint16_t *base, const uint16_t *x, __m512i *even, __m512i *odd) {
    const __m512i high = _mm512_set1_epi32((int)0xFFFF0000u);
    const __m512i absMask = _mm512_set1_epi32(0x7FFFFFFF);
    const __m512i wb = _mm512_loadu_si512((const void *)base);
    const __m512i wx = _mm512_loadu_si512((const void *)x);
    const __m512 d0 = _mm512_sub_ps(_mm512_castsi512_ps(_mm512_slli_epi32(wx, 16)),
                                    _mm512_castsi512_ps(_mm512_slli_epi32(wb, 16)));
    const __m512 d1 = _mm512_sub_ps(_mm512_castsi512_ps(_mm512_and_si512(wx, high)),
                                    _mm512_castsi512_ps(_mm512_and_si512(wb, high)));
    *even = _mm512_and_si512(_mm512_castps_si512(d0), absMask);
    *odd = _mm512_and_si512(_mm512_castps_si512(d1), absMask);
}
#endif

#endif
