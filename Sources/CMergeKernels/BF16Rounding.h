// Private to CMergeKernels: f32 → BF16 round-to-nearest-even of 8 lanes, as the merge kernels' outputs are written
// (NaN kept quiet with its sign). The result holds the BF16 bits in each lane's top half.
#ifndef TSWITCH_BF16_ROUNDING_H
#define TSWITCH_BF16_ROUNDING_H

#if defined(__x86_64__) && defined(__clang__)
#include <immintrin.h>

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
#endif

#endif
