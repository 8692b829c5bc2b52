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

#include <stdint.h>

// Masked BF16 merge pass (FusedMaskedMerge.c) of TIES / breadcrumbs / breadcrumbs_ties: per element
// d_i = x_i - base, v_i = ((d_i * mask_i) * scale_i) * weight_i (d_i * weight_i when unmasked), then the sign
// election and disjoint mean (`consensus`) or the plain sum / divide, * lambda, base + result, narrowed to BF16.
// The operations and their order are those of `GTA.merge`'s block path, so the bits are identical.

/// The most models one call takes (the per-element values live on the stack).
#define TSWITCH_MASKED_MAX_MODELS 32

/// One model of a masked merge. |d| (f32 bits, sign cleared) is kept when above `keep_bits`, or equal to it at an
/// element offset (from the call's `lo`) below `keep_limit`; with `has_drop`, entries kept by the drop rule
/// (same form) are removed. A threshold of 0x7FFFFFFF with limit 0 keeps nothing.
typedef struct tswitch_masked_model {
    const void *x;
    float weight;
    float scale;
    int32_t masked;
    int32_t has_drop;
    int32_t keep_bits;
    int32_t keep_limit;
    int32_t drop_bits;
    int32_t drop_limit;
} tswitch_masked_model;

/// Elements [lo, hi) of the masked merge at `level` (2 AVX-512, 1 AVX2, at most `tswitch_fused_level()`; 0 the
/// scalar C loop). `base`, every `x` and `out` are BF16 and address element 0 (unaligned is fine); 0 <= m <= the maximum.
void tswitch_masked_merge_bf16(int level, const void *base, const tswitch_masked_model *models, int m, int consensus,
                               int normalize, float divide, float lambda, void *out, size_t lo, size_t hi);

/// The level-1 pass of a magnitude top-k (`MagnitudeTopK.accumulateLevel1` and `collectBand`) over elements
/// [lo, hi) of the BF16 task vector x - base, without widening into scratch: adds each |d|'s bucket (f32 bits of
/// |d| >> 16) to `histogram`, `copies` (1-16) consecutive tables of 32768 counters whose sum is the histogram (the
/// AVX2 loop spreads neighbouring elements over them; the scalar loop uses the first), and, for each of `bands`
/// (0-2) bands lowest[q]...highest[q] of buckets, writes `tag | bits` of every member to members[q] (room for
/// hi - lo entries), their number to counts[q]. `level` 1 is AVX2, 0 the scalar loop; the histogram and the member sets are the same at both.
void tswitch_level1_bf16(int level, const void *base, const void *x, size_t lo, size_t hi, uint32_t *histogram,
                         int copies, const uint32_t *lowest, const uint32_t *highest, int bands, uint64_t tag,
                         uint64_t *const *members, size_t *counts);

/// The band pass of a magnitude top-k whose threshold bucket was estimated from a sample (BandCount.c): over
/// elements [lo, hi) of the BF16 task vector x - base, for each of `bands` (1-2) bands lowest[q]...highest[q] of
/// level-1 buckets (f32 bits of |d| >> 16, at most 0x7FFF), counts the entries above the band into above[q] and
/// writes `tag | bits` of every member to members[q] (room for hi - lo entries), their number to counts[q], and,
/// where `histograms` and histograms[q] are non-NULL, adds each member's bucket - lowest[q] to histograms[q]
/// (highest - lowest + 1 counters). No full histogram: the exact bucket comes from the band's. `level` 2 is
/// AVX-512 (F + BW), 1 AVX2, 0 the scalar loop; all give the same counts and member sets (members in any order).
void tswitch_band_count_bf16(int level, const void *base, const void *x, size_t lo, size_t hi,
                             const uint32_t *lowest, const uint32_t *highest, int bands, uint64_t tag,
                             uint64_t *const *members, size_t *counts, uint64_t *above, uint32_t *const *histograms);

// Switching a tile from bit masks (MaskedSwitch.c): out = base with each list added in order, where bit j of mask
// word b marks element 16b + j: + c, or + c * (the list's next stored value) for a random-mask list. The same IEEE
// operations in the same order as the index-list loop (`SwitchKernel.add`), so the bits are identical.

/// The most lists one call takes.
#define TSWITCH_MASK_MAX_LISTS 64

/// One index list of a switched tensor as a bit mask: `mask` addresses the word of the call's first element,
/// `values` (NULL for a sign list) the list's first stored value at or after it.
typedef struct tswitch_mask_list {
    const uint16_t *mask;
    const float *values;
    float c;
} tswitch_mask_list;

/// `count` (a multiple of 16) elements of a tile: base copied into out, then the n (<= the maximum) lists added.
/// AVX-512 only: call it when `tswitch_fused_level()` is 2.
void tswitch_switch_tile_avx512(const float *base, float *out, size_t count, const tswitch_mask_list *lists, int n);

#endif
