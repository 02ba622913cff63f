// The fused assignment kernel of dpmot_bench.ot.native: the k <= 8 largest scores s_ij = h_j + <x_i, y_j>
// of every row, without writing the scores to memory. See native.py for why it exists and how it is built.
//
// Targets come packed in groups of LANES (``packed[g][t][lane]`` = coordinate t of target LANES g + lane:
// 16 lanes where the compiler targets AVX-512, else 8 with AVX2; dpmot_lanes() says which), and their
// number n is a multiple of 2 LANES. A tile of 6 rows x 2 LANES targets is accumulated in 12 vector
// registers: s = h_j, then s = fma(x_t, y_jt, s) for t = 0, ..., d - 1: every score is rounded the same way
// whatever the tile, the thread, the call or the vector width it belongs to (a fused multiply-add rounds
// once). Each row keeps its k best (value, column) pairs in order (value descending, then column
// ascending: columns are visited in increasing order and a new score enters only when strictly larger
// than the k-th, so ties keep the lowest column). The first 256 targets' scores are kept, and only those
// at least the k-th largest of 8 lane maxima are offered (the others have k larger scores before them);
// after them, a tile is looked at only when one of its scores beats the row's k-th best (a vector
// compare), which is rare. Missing entries (fewer than k scores above -inf) are (-inf, n).
#include <immintrin.h>
#include <math.h>
#include <stdint.h>

#if !defined(__AVX2__) || !defined(__FMA__)
#error "the fused kernel needs AVX2 and FMA"
#endif

namespace {

#if defined(__AVX512F__)
// 16 lanes: twice the targets per instruction (on a 2-core AVX-512 Xeon, d = 16, N = 1024: 1.6-1.7x the
// AVX2 code's GFLOP/s for k = 1, 1.3-1.5x for k = 3; the same scores bit for bit).
constexpr int LANES = 16;
typedef __m512 vec;
inline vec load(const float* p) { return _mm512_loadu_ps(p); }
inline vec splat(float v) { return _mm512_set1_ps(v); }
inline vec fmadd(vec a, vec b, vec c) { return _mm512_fmadd_ps(a, b, c); }
inline void store(float* p, vec v) { _mm512_storeu_ps(p, v); }
inline unsigned greater(vec a, vec b) { return _mm512_cmp_ps_mask(a, b, _CMP_GT_OQ); }
#else
constexpr int LANES = 8;
typedef __m256 vec;
inline vec load(const float* p) { return _mm256_loadu_ps(p); }
inline vec splat(float v) { return _mm256_set1_ps(v); }
inline vec fmadd(vec a, vec b, vec c) { return _mm256_fmadd_ps(a, b, c); }
inline void store(float* p, vec v) { _mm256_storeu_ps(p, v); }
inline unsigned greater(vec a, vec b) { return _mm256_movemask_ps(_mm256_cmp_ps(a, b, _CMP_GT_OQ)); }
#endif

constexpr int MAXIMA = 8;  // lane maxima of the warm-up (AVX2 vectors): the k-th largest bounds the k-th score, k <= 8
constexpr int ROWS = 6;  // rows per tile: 12 accumulators + 2 target vectors + 1 broadcast (of 16 or 32 registers)
constexpr int64_t WARM_TARGETS = 256;  // targets whose scores are kept before the threshold test starts (AVX2: measured best of 32-256)
constexpr int64_t WARM_PAIRS = WARM_TARGETS / (2 * LANES);

template <int K>
struct Best {
  static_assert(K <= MAXIMA, "the k-th largest lane maximum needs k <= 8 lanes");
  float value[K];
  int64_t column[K];

  void reset(int64_t missing) {
    for (int r = 0; r < K; ++r) { value[r] = -INFINITY; column[r] = missing; }
  }
  // The first targets' scores (columns 0, ..., count - 1, count a multiple of MAXIMA): only those at least
  // the k-th largest of the MAXIMA lanes' maxima (at most the k-th largest score) can be among the k best.
  void warm_up(const float* scores, int64_t count) {
    __m256 lane_max = _mm256_loadu_ps(scores);
    for (int64_t j = MAXIMA; j < count; j += MAXIMA) lane_max = _mm256_max_ps(lane_max, _mm256_loadu_ps(scores + j));
    float maxima[MAXIMA];
    _mm256_storeu_ps(maxima, lane_max);
    Best floor;  // the k largest lane maxima
    floor.reset(0);
    for (int l = 0; l < MAXIMA; ++l) floor.insert(maxima[l], l);
    const __m256 low = _mm256_set1_ps(floor.value[K - 1]);
    for (int64_t j = 0; j < count; j += MAXIMA) {
      unsigned mask = _mm256_movemask_ps(_mm256_cmp_ps(_mm256_loadu_ps(scores + j), low, _CMP_GE_OQ));
      while (mask) {
        int lane = __builtin_ctz(mask);
        mask &= mask - 1;
        insert(scores[j + lane], j + lane);
      }
    }
  }
  inline void insert(float s, int64_t at) {
    if (!(s > value[K - 1])) return;
    int r = K - 1;
    while (r > 0 && s > value[r - 1]) { value[r] = value[r - 1]; column[r] = column[r - 1]; --r; }
    value[r] = s;
    column[r] = at;
  }
  // Offer the LANES scores of one target group (columns base, ..., base + LANES - 1), in column order.
  inline void offer(vec scores, int64_t base) {
    unsigned mask = greater(scores, splat(value[K - 1]));
    if (!mask) return;
    float lanes[LANES];
    store(lanes, scores);
    while (mask) {
      int lane = __builtin_ctz(mask);
      mask &= mask - 1;
      insert(lanes[lane], base + lane);
    }
  }
};

template <int K>
void top_k(const float* x, int64_t m, int64_t d, const float* packed, const float* h, int64_t n,
           float* values, int64_t* columns, int threads) {
  const int64_t pairs = n / (2 * LANES);
  const int64_t tiles = (m + ROWS - 1) / ROWS;
#pragma omp parallel for num_threads(threads) schedule(static)
  for (int64_t tile = 0; tile < tiles; ++tile) {
    const int64_t first = tile * ROWS;
    const float* row[ROWS];
    Best<K> best[ROWS];
    for (int p = 0; p < ROWS; ++p) {
      row[p] = x + (first + p < m ? first + p : m - 1) * d;  // a short last tile repeats its last row
      best[p].reset(n);
    }
    const int64_t warm = pairs < WARM_PAIRS ? pairs : WARM_PAIRS;
    float scores[ROWS][WARM_PAIRS * 2 * LANES];
    for (int64_t pair = 0; pair < pairs; ++pair) {
      const float* y0 = packed + 2 * pair * d * LANES;
      const float* y1 = y0 + d * LANES;
      const vec h0 = load(h + 2 * pair * LANES), h1 = load(h + 2 * pair * LANES + LANES);
      vec s0[ROWS], s1[ROWS];
#pragma GCC unroll 8
      for (int p = 0; p < ROWS; ++p) { s0[p] = h0; s1[p] = h1; }
      for (int64_t t = 0; t < d; ++t) {
        const vec u = load(y0 + t * LANES), v = load(y1 + t * LANES);
#pragma GCC unroll 8
        for (int p = 0; p < ROWS; ++p) {
          const vec xt = splat(row[p][t]);
          s0[p] = fmadd(xt, u, s0[p]);
          s1[p] = fmadd(xt, v, s1[p]);
        }
      }
      if (pair < warm) {
#pragma GCC unroll 8
        for (int p = 0; p < ROWS; ++p) {
          store(scores[p] + 2 * pair * LANES, s0[p]);
          store(scores[p] + 2 * pair * LANES + LANES, s1[p]);
        }
        if (pair + 1 == warm)
          for (int p = 0; p < ROWS; ++p) best[p].warm_up(scores[p], 2 * warm * LANES);
        continue;
      }
#pragma GCC unroll 8
      for (int p = 0; p < ROWS; ++p) {
        const vec kth = splat(best[p].value[K - 1]);
        if (greater(s0[p], kth) | greater(s1[p], kth)) {
          best[p].offer(s0[p], 2 * pair * LANES);
          best[p].offer(s1[p], 2 * pair * LANES + LANES);
        }
      }
    }
    for (int p = 0; p < ROWS && first + p < m; ++p)
      for (int r = 0; r < K; ++r) {
        values[(first + p) * K + r] = best[p].value[r];
        columns[(first + p) * K + r] = best[p].column[r];
      }
  }
}

}  // namespace

extern "C" int dpmot_lanes() { return LANES; }

extern "C" int dpmot_top_k(const float* x, int64_t m, int64_t d, const float* packed, const float* h, int64_t n,
                           int k, float* values, int64_t* columns, int threads) {
  if (m <= 0) return 0;
  if (n <= 0 || n % (2 * LANES) != 0 || d <= 0 || threads <= 0) return 1;
  switch (k) {
    case 1: top_k<1>(x, m, d, packed, h, n, values, columns, threads); return 0;
    case 2: top_k<2>(x, m, d, packed, h, n, values, columns, threads); return 0;
    case 3: top_k<3>(x, m, d, packed, h, n, values, columns, threads); return 0;
    case 4: top_k<4>(x, m, d, packed, h, n, values, columns, threads); return 0;
    case 5: top_k<5>(x, m, d, packed, h, n, values, columns, threads); return 0;
    case 6: top_k<6>(x, m, d, packed, h, n, values, columns, threads); return 0;
    case 7: top_k<7>(x, m, d, packed, h, n, values, columns, threads); return 0;
    case 8: top_k<8>(x, m, d, packed, h, n, values, columns, threads); return 0;
    default: return 1;
  }
}
