// The switch of a tile from bit masks (MaskedSwitch in CMergeKernels.h), in AVX-512; see the header.
//
// The IEEE operations are those of `SwitchKernel.add`: per element and list in list order, w + c, or w + c * v
// (separate multiply and add, contraction off), so a tile written here equals the index-list path bit for bit.

#include "CMergeKernels.h"

#include <stdint.h>

#pragma clang fp contract(off)

#if defined(__x86_64__) && defined(__clang__)
#include <immintrin.h>

// One list's masked add into one block of 16 elements (the block's stored values, if any, taken from *values).
__attribute__((target("avx512f,avx512bw,popcnt"))) static inline __m512 tswitch_add_list(
    __m512 w, __mmask16 m, __m512 c, const float **values) {
    if (*values) {
        // The list's stored values are consecutive in element order: expand them into the masked lanes.
        const __m512 v = _mm512_maskz_expandloadu_ps(m, *values);
        *values += __builtin_popcount((unsigned)m);
        return _mm512_mask_add_ps(w, m, w, _mm512_mul_ps(c, v));
    }
    return _mm512_mask_add_ps(w, m, w, c);
}

__attribute__((target("avx512f,avx512bw,popcnt"))) void tswitch_switch_tile_avx512(
    const float *base, float *out, size_t count, const tswitch_mask_list *lists, int n) {
    const float *values[TSWITCH_MASK_MAX_LISTS];
    for (int l = 0; l < n; l++) values[l] = lists[l].values;
    const size_t blocks = count / 16;
    size_t b = 0;
    // Four blocks at a time, lists outer: per element the adds stay in list order (the same values bit for bit),
    // while the four blocks' adds are independent, so they overlap instead of waiting on one another.
    for (; b + 4 <= blocks; b += 4) {
        __m512 w0 = _mm512_loadu_ps(base + 16 * b);
        __m512 w1 = _mm512_loadu_ps(base + 16 * (b + 1));
        __m512 w2 = _mm512_loadu_ps(base + 16 * (b + 2));
        __m512 w3 = _mm512_loadu_ps(base + 16 * (b + 3));
        for (int l = 0; l < n; l++) {
            const uint16_t *m = lists[l].mask + b;
            const __m512 c = _mm512_set1_ps(lists[l].c);
            w0 = tswitch_add_list(w0, m[0], c, &values[l]);
            w1 = tswitch_add_list(w1, m[1], c, &values[l]);
            w2 = tswitch_add_list(w2, m[2], c, &values[l]);
            w3 = tswitch_add_list(w3, m[3], c, &values[l]);
        }
        _mm512_storeu_ps(out + 16 * b, w0);
        _mm512_storeu_ps(out + 16 * (b + 1), w1);
        _mm512_storeu_ps(out + 16 * (b + 2), w2);
        _mm512_storeu_ps(out + 16 * (b + 3), w3);
    }
    for (; b < blocks; b++) {
        __m512 w = _mm512_loadu_ps(base + 16 * b);
        for (int l = 0; l < n; l++) w = tswitch_add_list(w, lists[l].mask[b], _mm512_set1_ps(lists[l].c), &values[l]);
        _mm512_storeu_ps(out + 16 * b, w);
    }
}

#else
void tswitch_switch_tile_avx512(const float *base, float *out, size_t count, const tswitch_mask_list *lists, int n) {
    (void)base; (void)out; (void)count; (void)lists; (void)n;
}
#endif
