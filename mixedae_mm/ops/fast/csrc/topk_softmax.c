/*
 * CPU kernels of homologous attention's sparse softmax (see
 * mixedae_mm/cpu_kernels.py, which builds and loads this file, and
 * ops._SparseTopKAttention, which calls it).
 *
 * Layout: B independent (L, L) score matrices, row-major, contiguous. The
 * first P rows and columns belong to the prefix (cls) tokens, the other
 * N = L - P to the patches. A prefix query keeps every key; a patch query
 * keeps the P prefix keys and its K highest-scoring patch keys, exact ties
 * going to the lower key position (the rule of ops.topk_select).
 *
 * One pass per row replaces top-k, the softmax over the kept logits and the
 * scatter into a dense matrix; the row (L <= a few hundred floats) stays in
 * L1 throughout.
 */
#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* Order-preserving unsigned key of a float: negatives have all bits
 * flipped, non-negatives get the sign bit set. -0.0 is folded into 0.0
 * first (they compare equal as floats, so they tie). NaNs land beyond
 * +-inf, by their sign bit. Branch-free, so that loops over it vectorise. */
static inline uint32_t ordered_key(float x) {
  x += 0.0f;
  uint32_t bits;
  memcpy(&bits, &x, sizeof bits);
  uint32_t negative = (uint32_t)((int32_t)bits >> 31);
  return bits ^ (negative | 0x80000000u);
}

static inline float key_to_float(uint32_t key) {
  uint32_t negative = (uint32_t)((int32_t)~key >> 31);
  uint32_t bits = key ^ (negative | 0x80000000u);
  float x;
  memcpy(&x, &bits, sizeof x);
  return x;
}

#define KEY_OF_POS_INF 0xff800000u
#define KEY_OF_NEG_INF 0x007fffffu
#define MAX_INTERPOLATIONS 16

/* exp(x) for x <= 0: Cody-Waite reduction to r in [-ln2/2, ln2/2], a
 * degree-6 polynomial for e^r (the Cephes expf coefficients) and 2^n through
 * the exponent bits. Written out, rather than calling expf, so the compiler
 * vectorises the loops that use it. Inputs below -87.3 (where e^x is a
 * denormal) give 0. */
static inline float exp_nonpositive(float x) {
  const float lo = -87.33654f;
  float clamped = x < lo ? lo : x;
  float n = floorf(clamped * 1.44269504088896341f + 0.5f);
  float r = clamped - n * 0.693359375f;
  r = r + n * 2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  float e = p * r * r + r + 1.0f;
  int32_t bits = ((int32_t)n + 127) << 23;
  float scale;
  memcpy(&scale, &bits, sizeof scale);
  return x < lo ? 0.0f : e * scale;
}

/* Softmax of a whole (prefix query) row, in place. */
static void softmax_row(float *row, int64_t L, float scale) {
  float m = row[0];
  int bad = 0;
  for (int64_t j = 0; j < L; ++j) {
    bad |= isnan(row[j]);
    m = row[j] > m ? row[j] : m;
  }
  if (bad || !isfinite(m)) {
    for (int64_t j = 0; j < L; ++j) row[j] = NAN;
    return;
  }
  float sum = 0.0f;
  for (int64_t j = 0; j < L; ++j) {
    row[j] = exp_nonpositive((row[j] - m) * scale);
    sum += row[j];
  }
  float inv = 1.0f / sum;
  for (int64_t j = 0; j < L; ++j) row[j] *= inv;
}

/* The K-th largest of keys[0..n): the largest t with #{key >= t} >= K,
 * found bit by bit from the top; stops early once exactly K keys are >= t. */
static uint32_t kth_largest_key(const uint32_t *keys, int64_t n, int64_t K) {
  uint32_t t = 0;
  for (int bit = 31; bit >= 0; --bit) {
    uint32_t candidate = t | (1u << bit);
    int64_t count = 0;
    for (int64_t j = 0; j < n; ++j) count += keys[j] >= candidate;
    if (count >= K) {
      t = candidate;
      if (count == K) break;
    }
  }
  return t;
}

/* #{values[j] >= t}. */
static inline int32_t count_at_least(const float *values, int64_t n,
                                     float t) {
  int32_t count = 0;
  for (int64_t j = 0; j < n; ++j) count += values[j] >= t;
  return count;
}

/* A float t with exactly K of values[0..n) >= t, found by interpolating the
 * count between a bracket [lo, hi]: about six counting passes on a row of
 * Gaussian scores, twelve on a heavy-tailed one (cubed Gaussians), where
 * bisecting the bits of the keys takes about fourteen. Returns 0 when there
 * is none (values tie across the K-th place), or after MAX_INTERPOLATIONS
 * passes (an outlier beside a tight cluster), leaving the row to the exact
 * search on the keys. */
static int exact_k_threshold(const float *values, int64_t n, int64_t K,
                             float lo, float hi, float *threshold) {
  int32_t count_lo = (int32_t)n, count_hi = count_at_least(values, n, hi);
  if (count_lo == K) { /* every key */
    *threshold = lo;
    return 1;
  }
  if (count_hi == K) {
    *threshold = hi;
    return 1;
  }
  if (count_hi > K) return 0;
  for (int step = 0; step < MAX_INTERPOLATIONS; ++step) {
    /* where the count would reach K if it fell linearly, kept off the
     * bracket's ends so that it shrinks by at least 1/16 per step */
    float fraction = (float)(count_lo - K) / (float)(count_lo - count_hi);
    fraction = fraction < 0.0625f ? 0.0625f : fraction;
    fraction = fraction > 0.9375f ? 0.9375f : fraction;
    float mid = lo + fraction * (hi - lo);
    if (!(mid > lo && mid < hi)) return 0; /* no float left in between */
    int32_t count = count_at_least(values, n, mid);
    if (count == K) {
      *threshold = mid;
      return 1;
    }
    if (count > K) {
      lo = mid;
      count_lo = count;
    } else {
      hi = mid;
      count_hi = count;
    }
  }
  return 0;
}

/* One patch query row: select, softmax over the kept logits, write the
 * dense probabilities in place; the kept probabilities (prefix keys first,
 * then the selected patch keys in ascending position) to kept[0..P+K) and
 * the selected patch positions to index[0..K). keys, positions: scratch of
 * N + 1 entries.
 *
 * Non-finite scores behave as in ops.topk_attention_reference: -inf and
 * NaN with the sign bit rank lowest, +inf and NaN highest (the key order);
 * the softmax is NaN wherever torch.softmax's is (a kept NaN, or an
 * infinite largest kept logit); a kept -inf gets probability 0. */
static void topk_softmax_row(float *row, int64_t L, int64_t P, int64_t K,
                             float scale, uint32_t *keys, int32_t *positions,
                             float *kept, int64_t *index) {
  const int64_t N = L - P;
  float *patch = row + P;
  /* the extremes through the integer keys: float min/max reductions do
   * not vectorise without -ffast-math, integer ones do */
  uint32_t key_max = 0, key_min = 0xffffffffu;
  for (int64_t j = 0; j < N; ++j) {
    uint32_t key = ordered_key(patch[j]);
    keys[j] = key;
    key_max = key > key_max ? key : key_max;
    key_min = key < key_min ? key : key_min;
  }
  /* infinite or NaN keys lie at or beyond those of +-inf: no float bracket */
  const int finite = key_max < KEY_OF_POS_INF && key_min > KEY_OF_NEG_INF;
  float threshold;
  int32_t count = 0;
  if (finite && exact_k_threshold(patch, N, K, key_to_float(key_min),
                                  key_to_float(key_max), &threshold)) {
    for (int64_t j = 0; j < N; ++j) { /* branch-free compaction */
      positions[count] = (int32_t)j;
      count += patch[j] >= threshold;
    }
  } else { /* exact search on the keys; ties to the lowest positions */
    const uint32_t key_threshold = kth_largest_key(keys, N, K);
    int32_t above = 0;
    for (int64_t j = 0; j < N; ++j) above += keys[j] > key_threshold;
    int32_t ties_to_take = (int32_t)K - above;
    for (int64_t j = 0; j < N; ++j) {
      int take = keys[j] > key_threshold ||
                 (keys[j] == key_threshold && ties_to_take-- > 0);
      positions[count] = (int32_t)j;
      count += take;
    }
  }
  for (int64_t j = 0; j < P; ++j) kept[j] = row[j];
  for (int64_t c = 0; c < K; ++c) kept[P + c] = patch[positions[c]];
  float m = kept[0];
  int has_nan = 0;
  for (int64_t c = 0; c < P + K; ++c) {
    has_nan |= kept[c] != kept[c];
    m = kept[c] > m ? kept[c] : m;
  }
  if (has_nan || isinf(m)) {
    for (int64_t c = 0; c < P + K; ++c) kept[c] = NAN;
  } else {
    float sum = 0.0f;
    for (int64_t c = 0; c < P + K; ++c) {
      kept[c] = exp_nonpositive((kept[c] - m) * scale);
      sum += kept[c];
    }
    const float inv = 1.0f / sum;
    for (int64_t c = 0; c < P + K; ++c) kept[c] *= inv;
  }
  memset(row, 0, sizeof(float) * L);
  for (int64_t j = 0; j < P; ++j) row[j] = kept[j];
  for (int64_t c = 0; c < K; ++c) {
    patch[positions[c]] = kept[P + c];
    index[c] = positions[c];
  }
}

/* Forward. scores: (B, L, L) fp32, unscaled q.k, overwritten with the
 * probabilities. kept: (B, N, P + K). index: (B, N, K). Returns 0, or -1
 * when its scratch memory cannot be allocated (nothing written then). */
int mixedae_topk_softmax_forward(float *scores, int64_t B, int64_t L,
                                 int64_t P, int64_t K, float scale,
                                 float *kept, int64_t *index,
                                 int num_threads) {
  const int64_t N = L - P;
  /* keys and positions of each thread's current row */
  uint32_t *scratch =
      (uint32_t *)malloc(sizeof(uint32_t) * 2 * (N + 1) * num_threads);
  if (scratch == NULL) return -1;
#pragma omp parallel num_threads(num_threads)
  {
    uint32_t *keys = scratch + 2 * (N + 1) * omp_get_thread_num();
    int32_t *positions = (int32_t *)(keys + N + 1);
#pragma omp for schedule(static)
    for (int64_t r = 0; r < B * L; ++r) {
      const int64_t b = r / L, i = r % L;
      float *row = scores + r * L;
      if (i < P) {
        softmax_row(row, L, scale);
      } else {
        const int64_t q = b * N + (i - P);
        topk_softmax_row(row, L, P, K, scale, keys, positions,
                         kept + q * (P + K), index + q * K);
      }
    }
  }
  free(scratch);
  return 0;
}

/* Backward of the softmax. grad: (B, L, L) fp32, dL/dprobs on entry,
 * dL/dlogits (unscaled by the softmax scale) on return. probs: (B, L, L)
 * fp32, written with the dense probabilities. prefix_probs: (B, P, L);
 * kept, index: from the forward. Returns 0, or -1 as the forward. */
int mixedae_topk_softmax_backward(float *grad, float *probs, int64_t B,
                                  int64_t L, int64_t P, int64_t K,
                                  const float *prefix_probs,
                                  const float *kept, const int64_t *index,
                                  int num_threads) {
  const int64_t N = L - P;
  float *scratch = (float *)malloc(sizeof(float) * (P + K) * num_threads);
  if (scratch == NULL) return -1;
#pragma omp parallel num_threads(num_threads)
  {
    float *kept_grad = scratch + (P + K) * omp_get_thread_num();
#pragma omp for schedule(static)
    for (int64_t r = 0; r < B * L; ++r) {
      const int64_t b = r / L, i = r % L;
      float *g = grad + r * L;
      float *p = probs + r * L;
      if (i < P) {
        const float *pp = prefix_probs + (b * P + i) * L;
        float dot = 0.0f;
        for (int64_t j = 0; j < L; ++j) dot += pp[j] * g[j];
        for (int64_t j = 0; j < L; ++j) {
          p[j] = pp[j];
          g[j] = pp[j] * (g[j] - dot);
        }
      } else {
        const int64_t q = b * N + (i - P);
        const float *kp = kept + q * (P + K);
        const int64_t *idx = index + q * K;
        for (int64_t j = 0; j < P; ++j) kept_grad[j] = g[j];
        for (int64_t c = 0; c < K; ++c) kept_grad[P + c] = g[P + idx[c]];
        float dot = 0.0f;
        for (int64_t c = 0; c < P + K; ++c) dot += kp[c] * kept_grad[c];
        memset(g, 0, sizeof(float) * L);
        memset(p, 0, sizeof(float) * L);
        for (int64_t j = 0; j < P; ++j) {
          g[j] = kp[j] * (kept_grad[j] - dot);
          p[j] = kp[j];
        }
        for (int64_t c = 0; c < K; ++c) {
          g[P + idx[c]] = kp[P + c] * (kept_grad[P + c] - dot);
          p[P + idx[c]] = kp[P + c];
        }
      }
    }
  }
  free(scratch);
  return 0;
}
