#ifndef C_MERGE_KERNELS_H
#define C_MERGE_KERNELS_H

#include <stddef.h>

// Fused BF16 merge loop (FusedDeltaSum.c): out = base + lambda * ((sum_i (x_i - base) * w_i) / divide), or without a
// base out = (sum_i x_i * w_i) / divide, straight from the stored BF16 inputs into the BF16 output, with AVX-512 or
// AVX2 chosen at run time. Swift compiles for baseline x86-64 (SSE2), where the same loop takes several times the
// instructions. The IEEE operations and their order are those of `FusedStream` in TensorKernels (f32, no FMA,
// integer round-to-nearest-even narrowing, NaN -> 0x7FC0 with its sign), so every level gives identical bits.

/// The best level this CPU runs: 2 AVX-512 (F + BW), 1 AVX2, 0 none (callers use their portable loop).
int tswitch_fused_level(void);

/// Elements [lo, hi) of the fused BF16 loop at `level` (1 or 2, at most `tswitch_fused_level()`); hi - lo is a
/// multiple of 16. `base` may be NULL (weighted sum). Pointers address element 0 and may be unaligned; `divide`
/// and `lambda` equal to 1 are skipped, as in the Swift loop.
void tswitch_fused_bf16(int level, const void *base, const void *const *models, const float *weights, int m,
                        float divide, float lambda, void *out, size_t lo, size_t hi);

#endif
