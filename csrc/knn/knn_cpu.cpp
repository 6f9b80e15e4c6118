// Fused kNN on the CPU: squared distances are produced tile by tile and fed straight into a
// per-row top-k, so no (M, N) distance matrix is ever stored.
//
// Small D (the D = 3 of point coordinates): direct differences against a transposed copy of
// the reference points, so the loop over reference points is contiguous and vectorizes.
// Large D (DGCNN features, D = 64, 128): a GEMM block  |r|^2 - 2 q.r  through at::addmm on a
// (rows x ref-tile) block held per thread.
// Either way each row's keys of a tile go through one vectorized filter (a cheap upper bound
// on the tile's k-th key, or the worst of the k kept so far), only the few survivors reach
// the row's heap, and the k chosen distances are recomputed exactly by direct differences
// (the value the gradient belongs to) and ordered by (distance, index).
// Per-operator headers: <ATen/ATen.h> declares every ATen op and was most of the build time.
#include <ATen/core/Tensor.h>
#include <ATen/ops/addmm.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/from_blob.h>
#include <ATen/ops/zeros_like.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <c10/core/InferenceMode.h>

#if defined(__AVX512F__) || defined(__AVX2__)
#include <immintrin.h>
#endif

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <limits>
#include <utility>
#include <vector>

#include "knn/knn_checks.h"
#include "knn/knn_math.h"
#include "ops.h"

namespace flowam {
namespace {

// Query rows per work item: enough to amortize a ref tile (direct) or a GEMM call.
constexpr int64_t kDirectRows = 32;
constexpr int64_t kGemmRows = 64;
// Reference points per GEMM tile: the (rows x tile) block stays in L2.
constexpr int64_t kGemmTile = 1024;
// Up to this k the final ordering counts ranks instead of sorting.
constexpr int64_t kRankSortMax = 64;
// Bytes of L1 the direct path's ref tile and key row may use.
constexpr int64_t kDirectTileBytes = 24 * 1024;

// An upper bound on the k-th smallest of keys[0..n): split the keys into G strided groups;
// each group's minimum is a distinct key, so at least k keys are <= the k-th smallest of the
// G minima. With G a few times k only a few more than k keys pass it, where a running
// threshold alone lets through about k (1 + ln(n / k)). Never NaN: a NaN key is never taken
// as a minimum, and a group without a finite key leaves +inf (no filtering).
template <typename scalar_t, int64_t G>
scalar_t group_min_bound(const scalar_t* keys, int64_t n, int64_t k) {
  scalar_t mins[G];
  for (int64_t l = 0; l < G; ++l) mins[l] = std::numeric_limits<scalar_t>::infinity();
  int64_t c = 0;
  for (; c + G <= n; c += G) {
#pragma omp simd
    for (int64_t l = 0; l < G; ++l) mins[l] = keys[c + l] < mins[l] ? keys[c + l] : mins[l];
  }
  for (int64_t l = 0; c + l < n; ++l) mins[l] = keys[c + l] < mins[l] ? keys[c + l] : mins[l];
  // The k-th smallest minimum by counting (G^2 vector compares, no branches), which is
  // several times cheaper than std::nth_element on so few values.
  int32_t count_le[G] = {};
  for (int64_t j = 0; j < G; ++j) {
    const scalar_t mj = mins[j];
#pragma omp simd
    for (int64_t i = 0; i < G; ++i) count_le[i] += mj <= mins[i];
  }
  scalar_t bound = std::numeric_limits<scalar_t>::infinity();
#pragma omp simd reduction(min : bound)
  for (int64_t i = 0; i < G; ++i) bound = count_le[i] >= k && mins[i] < bound ? mins[i] : bound;
  return bound;
}

template <typename scalar_t>
scalar_t kth_key_bound(const scalar_t* keys, int64_t n, int64_t k) {
  // The bound pays off with at least two keys per group and G well above k; counting costs
  // G^2 / (vector width) compares, far less than offering every key to a heap of k.
  if (4 * k <= 32 && n >= 4 * 32) return group_min_bound<scalar_t, 32>(keys, n, k);
  if (2 * k <= 64 && n >= 4 * 64) return group_min_bound<scalar_t, 64>(keys, n, k);
  if (2 * k <= 128 && n >= 2 * 128) return group_min_bound<scalar_t, 128>(keys, n, k);
  if (2 * k <= 256 && n >= 2 * 256) return group_min_bound<scalar_t, 256>(keys, n, k);
  if (2 * k <= 512 && n >= 2 * 512) return group_min_bound<scalar_t, 512>(keys, n, k);
  return std::numeric_limits<scalar_t>::infinity();
}

// Writes base + l for the lanes l of keys[0..W) not above thr (NaN included) to out, which
// needs room for W entries, and returns how many. Branch-free: which lanes pass is
// unpredictable. AVX-512 compresses the lane numbers in one instruction. AVX2 compares a
// vector at once and walks the set bits of its mask: behind a tight threshold almost every
// mask is empty, so a row of 512 keys costs 64 compares rather than 512 scalar steps.
template <typename scalar_t, int64_t W>
inline int32_t positions_not_above_generic(const scalar_t* keys, scalar_t thr, int32_t base, int32_t* out) {
  int32_t count = 0;
  for (int32_t l = 0; l < W; ++l) {
    out[count] = base + l;
    count += !(keys[l] > thr);
  }
  return count;
}

#if defined(__AVX2__)
// The lanes of one 256-bit vector of keys not above thr (NaN included), as a bit mask.
inline unsigned mask_not_above(const float* keys, float thr) {
  return unsigned(_mm256_movemask_ps(_mm256_cmp_ps(_mm256_loadu_ps(keys), _mm256_set1_ps(thr), _CMP_NGT_UQ)));
}
inline unsigned mask_not_above(const double* keys, double thr) {
  return unsigned(_mm256_movemask_pd(_mm256_cmp_pd(_mm256_loadu_pd(keys), _mm256_set1_pd(thr), _CMP_NGT_UQ)));
}

// positions_not_above over W keys, a 256-bit vector (32 / sizeof(scalar_t) lanes) at a time,
// walking the set bits of each vector's mask, lowest first.
template <typename scalar_t, int32_t W>
inline int32_t positions_not_above_avx2(const scalar_t* keys, scalar_t thr, int32_t base, int32_t* out) {
  constexpr int32_t L = 32 / sizeof(scalar_t);
  int32_t count = 0;
  for (int32_t h = 0; h < W; h += L) {
    for (unsigned m = mask_not_above(keys + h, thr); m; m &= m - 1) out[count++] = base + h + __builtin_ctz(m);
  }
  return count;
}
#endif

inline int32_t positions_not_above(const float* keys, float thr, int32_t base, int32_t* out) {
#if defined(__AVX512F__)
  const __mmask16 m = _mm512_cmp_ps_mask(_mm512_loadu_ps(keys), _mm512_set1_ps(thr), _CMP_NGT_UQ);
  const __m512i lanes = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  _mm512_storeu_si512(out, _mm512_maskz_compress_epi32(m, _mm512_add_epi32(_mm512_set1_epi32(base), lanes)));
  return __builtin_popcount(m);
#elif defined(__AVX2__)
  return positions_not_above_avx2<float, 16>(keys, thr, base, out);
#else
  return positions_not_above_generic<float, 16>(keys, thr, base, out);
#endif
}

inline int32_t positions_not_above(const double* keys, double thr, int32_t base, int32_t* out) {
#if defined(__AVX512F__) && defined(__AVX512VL__)
  const __mmask8 m = _mm512_cmp_pd_mask(_mm512_loadu_pd(keys), _mm512_set1_pd(thr), _CMP_NGT_UQ);
  const __m256i lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(out),
                      _mm256_maskz_compress_epi32(m, _mm256_add_epi32(_mm256_set1_epi32(base), lanes)));
  return __builtin_popcount(m);
#elif defined(__AVX2__)
  return positions_not_above_avx2<double, 8>(keys, thr, base, out);
#else
  return positions_not_above_generic<double, 8>(keys, thr, base, out);
#endif
}

// Offers candidates j0 .. j0+n-1 with keys[0..n) to one row's heap: first the positions of
// the keys not above the threshold (the heap's worst so far, or the bound on this block's
// k-th key) are collected, then only those reach the heap. cand needs room for n + 16.
template <typename scalar_t>
inline void scan_keys(const scalar_t* keys, int64_t n, int64_t j0, scalar_t* hd, int64_t* hi, int64_t k,
                      int32_t* cand) {
  constexpr int64_t W = 64 / sizeof(scalar_t);
  // Once the heap holds k real candidates (after the first block of a row), its worst is
  // usually tighter than any bound on one block.
  const scalar_t thr = hd[0] == std::numeric_limits<scalar_t>::infinity() ? kth_key_bound(keys, n, k) : hd[0];
  int32_t count = 0;
  int64_t t = 0;
  for (; t + W <= n; t += W) count += positions_not_above(keys + t, thr, int32_t(t), cand + count);
  for (; t < n; ++t) {
    cand[count] = int32_t(t);
    count += !(keys[t] > thr);
  }
  for (int32_t c = 0; c < count; ++c) knn_heap_offer(hd, hi, k, keys[cand[c]], j0 + cand[c]);
}

// Writes one row's result: the exact distances of the k selected points, ordered by
// (dist, idx). Every pair is distinct, so a pair's rank is the number of pairs before it:
// O(k^2) branch-free compares beat a sort for the usual small k.
template <typename scalar_t>
struct RowFinisher {
  std::vector<scalar_t> exact, key;
  std::vector<int32_t> rank;
  std::vector<std::pair<scalar_t, int64_t>> pairs;
  explicit RowFinisher(int64_t k) : exact(k), key(k), rank(k), pairs(k) {}

  void operator()(const scalar_t* q, const scalar_t* ref_b, int64_t dim, int64_t k, const int64_t* sel,
                  scalar_t* out_d, int64_t* out_i) {
    for (int64_t p = 0; p < k; ++p) {
      exact[p] = knn_sq_dist(q, ref_b + sel[p] * dim, dim);
      key[p] = knn_sanitize(exact[p]);
    }
    if (k <= kRankSortMax) {
      std::fill(rank.begin(), rank.end(), 0);
      for (int64_t o = 0; o < k; ++o) {
        const scalar_t ko = key[o];
        const int64_t io = sel[o];
#pragma omp simd
        for (int64_t p = 0; p < k; ++p) rank[p] += knn_less(ko, io, key[p], sel[p]);
      }
      for (int64_t p = 0; p < k; ++p) {
        out_d[rank[p]] = exact[p];
        out_i[rank[p]] = sel[p];
      }
      return;
    }
    for (int64_t p = 0; p < k; ++p) pairs[p] = {key[p], p};
    std::sort(pairs.begin(), pairs.end(), [sel](const auto& a, const auto& b) {
      return knn_less(a.first, sel[a.second], b.first, sel[b.second]);
    });
    for (int64_t p = 0; p < k; ++p) {
      out_d[p] = exact[pairs[p].second];
      out_i[p] = sel[pairs[p].second];
    }
  }
};

// One thread's state for a block of query rows: a heap per row, the keys of one tile, the
// positions that pass the threshold, and the finisher's scratch.
template <typename scalar_t>
struct BlockScratch {
  int64_t k;
  std::vector<scalar_t> hd;
  std::vector<int64_t> hi;
  std::vector<scalar_t> keys;
  std::vector<int32_t> cand;
  RowFinisher<scalar_t> finish_row;
  BlockScratch(int64_t rows, int64_t k, int64_t key_count, int64_t tile)
      : k(k), hd(rows * k), hi(rows * k), keys(key_count), cand(tile + 16), finish_row(k) {}

  void reset(int64_t rows) {
    for (int64_t r = 0; r < rows; ++r) knn_heap_init(hd.data() + r * k, hi.data() + r * k, k);
  }
  void scan(int64_t r, const scalar_t* row_keys, int64_t n, int64_t j0) {
    scan_keys(row_keys, n, j0, hd.data() + r * k, hi.data() + r * k, k, cand.data());
  }
  void finish(const scalar_t* query, const scalar_t* ref_b, int64_t dim, int64_t i0, int64_t rows,
              scalar_t* out_d, int64_t* out_i) {
    for (int64_t r = 0; r < rows; ++r)
      finish_row(query + (i0 + r) * dim, ref_b, dim, k, hi.data() + r * k, out_d + (i0 + r) * k,
                 out_i + (i0 + r) * k);
  }
};

// Runs body(w, state) for every work item w in [0, total) on all threads, handing items out
// one at a time: a thread slowed down (by another process, or by rows that need more heap
// work) does not hold the others up. Each thread makes its own scratch state once. Every
// item's result depends only on the item, so the output is the same whoever computes it.
template <typename MakeState, typename Body>
void parallel_items(int64_t total, const MakeState& make_state, const Body& body) {
  std::atomic<int64_t> next{0};
  at::parallel_for(0, at::get_num_threads(), 1, [&](int64_t, int64_t) {
    auto state = make_state();
    for (int64_t w = next++; w < total; w = next++) body(w, state);
  });
}

template <typename scalar_t, int D>
void knn_direct(const scalar_t* query, const scalar_t* ref, int64_t B, int64_t M, int64_t N, int64_t k,
                scalar_t* out_d, int64_t* out_i) {
  constexpr int64_t W = 64 / sizeof(scalar_t);
  const int64_t tile = std::max<int64_t>(W, kDirectTileBytes / ((D + 1) * sizeof(scalar_t)) / W * W);
  // (B, D, N): coordinate-major, so the key loop reads each coordinate contiguously.
  std::vector<scalar_t> ref_t(B * D * N);
  at::parallel_for(0, B, 1, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b)
      for (int64_t j = 0; j < N; ++j)
        for (int d = 0; d < D; ++d) ref_t[(b * D + d) * N + j] = ref[(b * N + j) * D + d];
  });
  const int64_t nblk = (M + kDirectRows - 1) / kDirectRows;
  auto make_scratch = [&] { return BlockScratch<scalar_t>(kDirectRows, k, tile, tile); };
  parallel_items(B * nblk, make_scratch, [&](int64_t w, BlockScratch<scalar_t>& s) {
    const int64_t b = w / nblk, i0 = (w % nblk) * kDirectRows;
    const int64_t rows = std::min(kDirectRows, M - i0);
    const scalar_t* q_b = query + b * M * D;
    const scalar_t* rt_b = ref_t.data() + b * D * N;
    scalar_t* keys = s.keys.data();
    s.reset(rows);
    for (int64_t j0 = 0; j0 < N; j0 += tile) {
      const int64_t n = std::min(tile, N - j0);
      for (int64_t r = 0; r < rows; ++r) {
        scalar_t q[D];
        for (int d = 0; d < D; ++d) q[d] = q_b[(i0 + r) * D + d];
#pragma omp simd
        for (int64_t t = 0; t < n; ++t) {
          scalar_t acc = 0;
          for (int d = 0; d < D; ++d) acc = knn_sq_acc(acc, q[d], rt_b[d * N + j0 + t]);
          keys[t] = acc;
        }
        s.scan(r, keys, n, j0);
      }
    }
    s.finish(q_b, ref + b * N * D, D, i0, rows, out_d + b * M * k, out_i + b * M * k);
  });
}

template <typename scalar_t>
void knn_gemm(const scalar_t* query, const scalar_t* ref, int64_t B, int64_t M, int64_t N, int64_t D,
              int64_t k, scalar_t* out_d, int64_t* out_i) {
  const auto opts = at::TensorOptions().dtype(c10::CppTypeToScalarType<scalar_t>::value);
  std::vector<scalar_t> norms(B * N);
  at::parallel_for(0, B * N, 256, [&](int64_t j0, int64_t j1) {
    for (int64_t j = j0; j < j1; ++j) norms[j] = knn_sq_norm(ref + j * D, D);
  });
  const int64_t nblk = (M + kGemmRows - 1) / kGemmRows;
  const int64_t tile = std::min(kGemmTile, N);
  auto make_scratch = [&] { return BlockScratch<scalar_t>(kGemmRows, k, kGemmRows * tile, tile); };
  parallel_items(B * nblk, make_scratch, [&](int64_t w, BlockScratch<scalar_t>& s) {
    // Worker threads do not inherit the caller's grad mode; inference mode also skips the
    // autograd dispatch of the per-tile GEMM calls.
    c10::InferenceMode no_autograd;
    const int64_t b = w / nblk, i0 = (w % nblk) * kGemmRows;
    const int64_t rows = std::min(kGemmRows, M - i0);
    const scalar_t* q_b = query + b * M * D;
    const scalar_t* r_b = ref + b * N * D;
    auto q_blk = at::from_blob(const_cast<scalar_t*>(q_b + i0 * D), {rows, D}, opts);
    s.reset(rows);
    for (int64_t j0 = 0; j0 < N; j0 += tile) {
      const int64_t n = std::min(tile, N - j0);
      auto r_tile = at::from_blob(const_cast<scalar_t*>(r_b + j0 * D), {n, D}, opts);
      auto norm_tile = at::from_blob(norms.data() + b * N + j0, {1, n}, opts);
      auto key_blk = at::from_blob(s.keys.data(), {rows, n}, opts);
      // key = |r|^2 - 2 q.r: dist2 less the row's constant |q|^2, which cannot change the order.
      at::addmm_out(key_blk, norm_tile.expand({rows, n}), q_blk, r_tile.t(), 1, -2);
      for (int64_t r = 0; r < rows; ++r) s.scan(r, s.keys.data() + r * n, n, j0);
    }
    s.finish(q_b, r_b, D, i0, rows, out_d + b * M * k, out_i + b * M * k);
  });
}

template <typename scalar_t>
void knn_dispatch(const scalar_t* q, const scalar_t* r, int64_t B, int64_t M, int64_t N, int64_t D, int64_t k,
                  scalar_t* od, int64_t* oi) {
  switch (D) {
    case 1: return knn_direct<scalar_t, 1>(q, r, B, M, N, k, od, oi);
    case 2: return knn_direct<scalar_t, 2>(q, r, B, M, N, k, od, oi);
    case 3: return knn_direct<scalar_t, 3>(q, r, B, M, N, k, od, oi);
    case 4: return knn_direct<scalar_t, 4>(q, r, B, M, N, k, od, oi);
    case 5: return knn_direct<scalar_t, 5>(q, r, B, M, N, k, od, oi);
    case 6: return knn_direct<scalar_t, 6>(q, r, B, M, N, k, od, oi);
    case 7: return knn_direct<scalar_t, 7>(q, r, B, M, N, k, od, oi);
    case 8: return knn_direct<scalar_t, 8>(q, r, B, M, N, k, od, oi);
    default: return knn_gemm<scalar_t>(q, r, B, M, N, D, k, od, oi);
  }
}
static_assert(kDirectMaxDim == 8, "knn_dispatch lists the direct dimensions");

}  // namespace

TensorPair knn_forward_cpu(const at::Tensor& query, const at::Tensor& ref, int64_t k) {
  knn_check_forward(query, ref, k, c10::DeviceType::CPU, "knn_forward_cpu");
  const int64_t B = query.size(0), M = query.size(1), N = ref.size(1), D = query.size(2);
  auto dist2 = at::empty({B, M, k}, query.options());
  auto idx = at::empty({B, M, k}, query.options().dtype(at::kLong));
  if (B == 0 || M == 0) return {dist2, idx};
  AT_DISPATCH_FLOATING_TYPES(query.scalar_type(), "knn_forward_cpu", [&] {
    knn_dispatch<scalar_t>(query.data_ptr<scalar_t>(), ref.data_ptr<scalar_t>(), B, M, N, D, k,
                           dist2.data_ptr<scalar_t>(), idx.data_ptr<int64_t>());
  });
  return {dist2, idx};
}

TensorPair knn_backward_cpu(const at::Tensor& grad_dist2, const at::Tensor& query,
                            const at::Tensor& ref, const at::Tensor& idx) {
  knn_check_backward(grad_dist2, query, ref, idx, c10::DeviceType::CPU, "knn_backward_cpu");
  const int64_t B = query.size(0), M = query.size(1), N = ref.size(1), D = query.size(2);
  const int64_t k = idx.size(2);
  auto grad_q = at::zeros_like(query);
  auto grad_r = at::zeros_like(ref);
  AT_DISPATCH_FLOATING_TYPES(query.scalar_type(), "knn_backward_cpu", [&] {
    const scalar_t* g = grad_dist2.data_ptr<scalar_t>();
    const scalar_t* q = query.data_ptr<scalar_t>();
    const scalar_t* r = ref.data_ptr<scalar_t>();
    const int64_t* ix = idx.data_ptr<int64_t>();
    scalar_t* gq = grad_q.data_ptr<scalar_t>();
    scalar_t* gr = grad_r.data_ptr<scalar_t>();
    // One thread per batch owns that batch's grad_ref rows: no races, and every sum runs in
    // the same order on every run (bit-identical results).
    at::parallel_for(0, B, 1, [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b)
        for (int64_t i = 0; i < M; ++i)
          for (int64_t p = 0; p < k; ++p) {
            const int64_t e = (b * M + i) * k + p;
            const int64_t j = ix[e];
            knn_pair_grad(g[e], q + (b * M + i) * D, r + (b * N + j) * D, gq + (b * M + i) * D,
                          gr + (b * N + j) * D, D);
          }
    });
  });
  return {grad_q, grad_r};
}

}  // namespace flowam
