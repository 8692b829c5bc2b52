// The switch of a tile from bit masks (MaskedSwitch in CMergeKernels.h), in AVX-512; see the header.
//
// The IEEE operations are those of `SwitchKernel.add`: per element and list in list order, w + c, or w + c * v
// (separate multiply and add, contraction off), so a tile written here equals the index-list path bit for bit.

#include "CMergeKernels.h"

#include <stdint.h>

#pragma clang fp contract(off)

#if defined(__x86_64__) && defined(__clang__)
#include <immintrin.h>

__attribute__((target("avx512f,avx512bw,popcnt"))) void tswitch_switch_tile_avx512(
    const float *base, float *out, size_t count, const tswitch_mask_list *lists, int n) {
    const float *values[TSWITCH_MASK_MAX_LISTS];
    for (int l = 0; l < n; l++) values[l] = lists[l].values;
    for (size_t b = 0; b < count / 16; b++) {
        __m512 w = _mm512_loadu_ps(base + 16 * b);
        for (int l = 0; l < n; l++) {
            const __mmask16 m = lists[l].mask[b];
            const __m512 c = _mm512_set1_ps(lists[l].c);
            if (values[l]) {
                // The list's stored values are consecutive in element order: expand them into the masked lanes.
                const __m512 v = _mm512_maskz_expandloadu_ps(m, values[l]);
                values[l] += __builtin_popcount((unsigned)m);
                w = _mm512_mask_add_ps(w, m, w, _mm512_mul_ps(c, v));
            } else {
                w = _mm512_mask_add_ps(w, m, w, c);
            }
        }
        _mm512_storeu_ps(out + 16 * b, w);
    }
}

#else
void tswitch_switch_tile_avx512(const float *base, float *out, size_t count, const tswitch_mask_list *lists, int n) {
    (void)base; (void)out; (void)count; (void)lists; (void)n;
}
#endif
