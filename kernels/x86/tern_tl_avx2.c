/* tern_tl_avx2: the TL layout (ternary.h) with AVX2 (no VNNI): each 32-byte row load gives 32
 * codes per shift in natural column order; vpmaddubsw (code u8 × q s8) into int16, widened to
 * int32 every few chunks. A GEMM tile unpacks one row's codes once and multiplies them against
 * up to 8 tokens' activations (kept in L1); one token (GEMV, memory-bound) keeps the 4-row
 * single-token loop. Σ code·q − Σq equals tern_tl_dot_ref exactly. */
#include "core/membw.h"
#include "kernels/ternary.h"
#include <immintrin.h>
#include "kernels/x86/simd_x86.h"

/* the 8 lanes of v summed */
/* out[i] = Σ code·q for the 4 rows of group base wg and one token (16 ymm registers: 4 row
 * words, 4 int16 partials, 4 int32 sums, codes and activations) */
static void tile1(const uint8_t *wg, int64_t cols, const int8_t *q, int32_t *out) {
    const __m256i m3 = _mm256_set1_epi8(3), ones = _mm256_set1_epi16(1);
    __m256i acc0 = _mm256_setzero_si256(), acc1 = acc0, acc2 = acc0, acc3 = acc0;
    for (int64_t k = 0; k < cols; k += 256, wg += 256, q += 256) {
        for (int l = 0; l < 4; l++) _mm_prefetch((const char *)(wg + TERN_PF_AHEAD + 64 * l), _MM_HINT_T0);
#pragma GCC unroll 2
        for (int h = 0; h < 2; h++) {
            const uint8_t *p = wg + 32 * h;
            __m256i w0 = _mm256_loadu_si256((const __m256i *)p), w1 = _mm256_loadu_si256((const __m256i *)(p + 64));
            __m256i w2 = _mm256_loadu_si256((const __m256i *)(p + 128)), w3 = _mm256_loadu_si256((const __m256i *)(p + 192));
            __m256i s0 = _mm256_setzero_si256(), s1 = s0, s2 = s0, s3 = s0;
#pragma GCC unroll 4
            for (int g = 0; g < 4; g++) {
                __m256i x = _mm256_loadu_si256((const __m256i *)(q + 64 * g + 32 * h));
                int sh = 6 - 2 * g;
                s0 = _mm256_add_epi16(s0, _mm256_maddubs_epi16(_mm256_and_si256(_mm256_srli_epi16(w0, sh), m3), x));
                s1 = _mm256_add_epi16(s1, _mm256_maddubs_epi16(_mm256_and_si256(_mm256_srli_epi16(w1, sh), m3), x));
                s2 = _mm256_add_epi16(s2, _mm256_maddubs_epi16(_mm256_and_si256(_mm256_srli_epi16(w2, sh), m3), x));
                s3 = _mm256_add_epi16(s3, _mm256_maddubs_epi16(_mm256_and_si256(_mm256_srli_epi16(w3, sh), m3), x));
            }
            acc0 = _mm256_add_epi32(acc0, _mm256_madd_epi16(s0, ones));
            acc1 = _mm256_add_epi32(acc1, _mm256_madd_epi16(s1, ones));
            acc2 = _mm256_add_epi32(acc2, _mm256_madd_epi16(s2, ones));
            acc3 = _mm256_add_epi32(acc3, _mm256_madd_epi16(s3, ones));
        }
    }
    out[0] = hsum8(acc0);
    out[1] = hsum8(acc1);
    out[2] = hsum8(acc2);
    out[3] = hsum8(acc3);
}

enum { TT = 8 };   /* GEMM tile: one row × up to TT tokens */
/* chunks between int16 → int32 widenings: a lane gets 8 vpmaddubsw per chunk, each
 * |c0·q0 + c1·q1| ≤ 2·3·128 = 768, so 4 chunks stay ≤ 24576 < 32767 */
#define FLUSH_CHUNKS 4

/* out[t] = Σ code·q for the row at wr (TL row stride: 64 bytes per chunk, chunks 256 bytes
 * apart) and T ≤ TT tokens (q row stride cols). T int16 accumulators and one code register;
 * the activations are vpmaddubsw memory operands (the tile's T × cols bytes stay in L1). One
 * row per tile measured best on the Zen 5 build host (kernel alone, 2560², in cache, 1 thread:
 * 1 row × 8 tokens 390 GOPS, 2 × 4 370, 4 × 2 325, the single-token loop 248): the shared unpack
 * is 7 ops per 8T vpmaddubsw, the rest one vpmaddubsw and one vpaddw per 32 multiply-adds.
 * pf: prefetch the group's weights (its first row in range does; the others then hit cache). */
static inline __attribute__((always_inline)) void tile(const uint8_t *wr, int64_t cols, const int8_t *q, int T,
                                                       int pf, int32_t *out) {
    const __m256i m3 = _mm256_set1_epi8(3), ones = _mm256_set1_epi16(1);
    __m256i a32[TT];
#pragma GCC unroll 16
    for (int t = 0; t < T; t++) a32[t] = _mm256_setzero_si256();
    for (int64_t k = 0; k < cols;) {
        int64_t kend = k + 256 * FLUSH_CHUNKS < cols ? k + 256 * FLUSH_CHUNKS : cols;
        __m256i a16[TT];
#pragma GCC unroll 16
        for (int t = 0; t < T; t++) a16[t] = _mm256_setzero_si256();
        for (; k < kend; k += 256, wr += 256) {
            if (pf) {   /* the group's first row: fetch its 4 rows' chunk 8 ahead (from memory) */
                _mm_prefetch((const char *)(wr + TERN_PF_AHEAD), _MM_HINT_T0);
                _mm_prefetch((const char *)(wr + TERN_PF_AHEAD + 64), _MM_HINT_T0);
                _mm_prefetch((const char *)(wr + TERN_PF_AHEAD + 128), _MM_HINT_T0);
                _mm_prefetch((const char *)(wr + TERN_PF_AHEAD + 192), _MM_HINT_T0);
            }
#pragma GCC unroll 2
            for (int h = 0; h < 2; h++) {
                __m256i w = _mm256_loadu_si256((const __m256i *)(wr + 32 * h));
#pragma GCC unroll 4
                for (int g = 0; g < 4; g++) {
                    __m256i c = _mm256_and_si256(g == 3 ? w : _mm256_srli_epi16(w, 6 - 2 * g), m3);
#pragma GCC unroll 16
                    for (int t = 0; t < T; t++) {
                        __m256i x = _mm256_loadu_si256((const __m256i *)(q + t * cols + k + 64 * g + 32 * h));
                        a16[t] = _mm256_add_epi16(a16[t], _mm256_maddubs_epi16(c, x));
                    }
                    /* keep the sums in registers: gcc otherwise reassociates the adds across the
                     * unrolled loop and spills every product to the stack (250 → 390 GOPS) */
#pragma GCC unroll 16
                    for (int t = 0; t < T; t++) __asm__("" : "+x"(a16[t]));
                }
            }
        }
#pragma GCC unroll 16
        for (int t = 0; t < T; t++) a32[t] = _mm256_add_epi32(a32[t], _mm256_madd_epi16(a16[t], ones));
    }
#pragma GCC unroll 16
    for (int t = 0; t < T; t++) out[t] = hsum8(a32[t]);
}

/* rows [r0, r0+nr) ∩ [g*4, g*4+4): tiles of T tokens from token t0 → isum */
static void group_tiles(const uint8_t *wg, int64_t g, int64_t r0, int64_t nr, const tact_t *a, int t0, int T,
                        int32_t *isum) {
    int64_t cols = a->cols;
    const int8_t *q = a->q + t0 * cols;
    int32_t part[TT];
    for (int i = 0; i < 4; i++) {
        int64_t r = g * 4 + i;
        if (r < r0 || r >= r0 + nr) continue;
        const uint8_t *wr = wg + 64 * i;
        int pf = r == r0 || i == 0;
        switch (T) {   /* constant T (2..8): the accumulators stay in registers */
        case 2: tile(wr, cols, q, 2, pf, part); break;
        case 3: tile(wr, cols, q, 3, pf, part); break;
        case 4: tile(wr, cols, q, 4, pf, part); break;
        case 5: tile(wr, cols, q, 5, pf, part); break;
        case 6: tile(wr, cols, q, 6, pf, part); break;
        case 7: tile(wr, cols, q, 7, pf, part); break;
        default: tile(wr, cols, q, TT, pf, part); break;
        }
        for (int t = 0; t < T; t++) isum[(t0 + t) * nr + (r - r0)] = part[t] - a->sum[t0 + t];
    }
}

void tern_tl_dot_avx2(const void *w, int64_t rows, int64_t r0, int64_t nr, const tact_t *a, int32_t *isum) {
    (void)rows;
    int64_t cols = a->cols;
    if (a->n == 1) {   /* GEMV: 4 rows per pass, one token */
        int32_t part[4];
        for (int64_t g = r0 / 4; g * 4 < r0 + nr; g++) {
            tile1((const uint8_t *)w + g * cols, cols, a->q, part);
            for (int i = 0; i < 4; i++) {
                int64_t r = g * 4 + i;
                if (r >= r0 && r < r0 + nr) isum[r - r0] = part[i] - a->sum[0];
            }
        }
        return;
    }
    /* token tiles outer (a tile's activations stay in L1 while the rows' weights stream past),
     * balanced: n = 30 → 8, 8, 7, 7 rather than 8, 8, 8, 6 */
    int ntiles = (a->n + TT - 1) / TT, base = a->n / ntiles, extra = a->n % ntiles;
    for (int i = 0, t0 = 0; i < ntiles; i++) {
        int T = base + (i >= ntiles - extra);
        for (int64_t g = r0 / 4; g * 4 < r0 + nr; g++)
            group_tiles((const uint8_t *)w + g * cols, g, r0, nr, a, t0, T, isum);   /* 4 rows × cols/4 bytes per group */
        t0 += T;
    }
}
