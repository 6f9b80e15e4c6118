// Per-element pieces of the fused kNN shared by the CPU loops and the CUDA kernels.
//
// Candidates are ordered by (distance, index) lexicographically; every (distance, index)
// pair of a row is distinct, so "the k smallest" is a unique set and ties go to the smaller
// index whatever order the candidates arrive in. Selection keeps a max-heap of the k best
// (its root is the rejection threshold), because k may be as large as N; the CUDA kernels keep
// a sorted list in registers instead (k is bounded there), ordered by the same knn_less.
#pragma once
#include <cstdint>
#include <limits>

#include "hd.h"

namespace flowam {

// A NaN distance (only reachable from a direct call with non-finite input) sorts as +inf,
// so the order stays total and every output slot still receives a valid index.
template <typename scalar_t>
FLOWAM_HD scalar_t knn_sanitize(scalar_t d) {
  return d != d ? std::numeric_limits<scalar_t>::infinity() : d;
}

// index_t: int64 on the CPU, int32 in the CUDA kernels' registers (N < 2^31 is checked there).
template <typename scalar_t, typename index_t>
FLOWAM_HD bool knn_less(scalar_t d1, index_t i1, scalar_t d2, index_t i2) {
  return (d1 < d2) | ((d1 == d2) & (i1 < i2));  // branch-free: vectorizes in rank counting
}

// The heap starts full of (+inf, INT64_MAX) placeholders: any real candidate beats them,
// even one at +inf, so no count of filled slots is needed.
template <typename scalar_t>
FLOWAM_HD void knn_heap_init(scalar_t* hd, int64_t* hi, int64_t k) {
  for (int64_t p = 0; p < k; ++p) {
    hd[p] = std::numeric_limits<scalar_t>::infinity();
    hi[p] = std::numeric_limits<int64_t>::max();
  }
}

// Offers candidate (d, j) to the max-heap of the k best so far.
template <typename scalar_t>
FLOWAM_HD void knn_heap_offer(scalar_t* hd, int64_t* hi, int64_t k, scalar_t d, int64_t j) {
  d = knn_sanitize(d);
  if (!knn_less(d, j, hd[0], hi[0])) return;
  int64_t p = 0;
  for (;;) {
    int64_t c = 2 * p + 1;
    if (c >= k) break;
    if (c + 1 < k && knn_less(hd[c], hi[c], hd[c + 1], hi[c + 1])) ++c;
    if (!knn_less(d, j, hd[c], hi[c])) break;
    hd[p] = hd[c];
    hi[p] = hi[c];
    p = c;
  }
  hd[p] = d;
  hi[p] = j;
}

// acc + (a - b)^2: the one formula for a squared distance, used both for selection in the
// direct path and for the exact recomputation, so the two agree bit for bit.
template <typename scalar_t>
FLOWAM_HD scalar_t knn_sq_acc(scalar_t acc, scalar_t a, scalar_t b) {
  const scalar_t t = a - b;
  return acc + t * t;
}

// Independent partial sums for long vectors, so the sum is not one serial chain of adds.
constexpr int64_t kSqDistLanes = 16;

// Up to this dimension both backends select by direct differences; above it, by the GEMM
// form |r|^2 - 2 q.r (on the CPU direct differences win up to here, benchmarks/bench_knn.py).
constexpr int64_t kDirectMaxDim = 8;

// The two points of a squared distance, and a point against the origin (its squared norm,
// the |r|^2 of the GEMM form): one summation routine serves both, so the norms the GEMM form
// selects with are summed exactly as the distances are.
template <typename scalar_t>
struct KnnPair {
  const scalar_t* q;
  const scalar_t* r;
  FLOWAM_HD scalar_t a(int64_t d) const { return q[d]; }
  FLOWAM_HD scalar_t b(int64_t d) const { return r[d]; }
};
template <typename scalar_t>
struct KnnOrigin {
  const scalar_t* r;
  FLOWAM_HD scalar_t a(int64_t d) const { return r[d]; }
  FLOWAM_HD scalar_t b(int64_t) const { return scalar_t(0); }
};

// sum_d (p.a(d) - p.b(d))^2. Up to kSqDistLanes coordinates it is the plain left-to-right sum,
// bit for bit the key the direct path selects with; longer vectors sum kSqDistLanes
// interleaved partial sums, in a fixed order (deterministic).
template <typename scalar_t, typename Points>
FLOWAM_HD scalar_t knn_sq_sum(const Points& p, int64_t dim) {
  scalar_t acc = 0;
  if (dim <= kSqDistLanes) {
    for (int64_t d = 0; d < dim; ++d) acc = knn_sq_acc(acc, p.a(d), p.b(d));
    return acc;
  }
  scalar_t part[kSqDistLanes] = {};
  int64_t d = 0;
  for (; d + kSqDistLanes <= dim; d += kSqDistLanes)
    for (int64_t l = 0; l < kSqDistLanes; ++l) part[l] = knn_sq_acc(part[l], p.a(d + l), p.b(d + l));
  for (int64_t l = 0; d + l < dim; ++l) part[l] = knn_sq_acc(part[l], p.a(d + l), p.b(d + l));
  for (int64_t l = 0; l < kSqDistLanes; ++l) acc += part[l];
  return acc;
}

// |q - r|^2: the exact distance of a selected pair (the value the gradient belongs to).
template <typename scalar_t>
FLOWAM_HD scalar_t knn_sq_dist(const scalar_t* q, const scalar_t* r, int64_t dim) {
  return knn_sq_sum<scalar_t>(KnnPair<scalar_t>{q, r}, dim);
}

// |r|^2, for the GEMM form's keys.
template <typename scalar_t>
FLOWAM_HD scalar_t knn_sq_norm(const scalar_t* r, int64_t dim) {
  return knn_sq_sum<scalar_t>(KnnOrigin<scalar_t>{r}, dim);
}

// The GEMM form's selection key |r|^2 - 2 q.r: dist2 less the row's constant |q|^2, which
// cannot change the order. The CPU gets it from one addmm (beta 1, alpha -2) and the GPU from
// its own tiled dot products; the doubling is exact, so both round once, in the subtraction.
template <typename scalar_t>
FLOWAM_HD scalar_t knn_gemm_key(scalar_t norm_r, scalar_t dot_qr) {
  return norm_r - scalar_t(2) * dot_qr;
}

// g * d(dist2)/dq_d = g * 2 (q_d - r_d) = -g * d(dist2)/dr_d, one coordinate of one pair.
template <typename scalar_t>
FLOWAM_HD scalar_t knn_grad_term(scalar_t g, scalar_t q, scalar_t r) {
  return (scalar_t(2) * g) * (q - r);
}

// One pair's gradient: adds the terms to grad_q and subtracts them from grad_r (the CPU's
// scatter; the CUDA kernels gather the same terms per point instead).
template <typename scalar_t>
FLOWAM_HD void knn_pair_grad(scalar_t g, const scalar_t* q, const scalar_t* r, scalar_t* grad_q,
                             scalar_t* grad_r, int64_t dim) {
  for (int64_t d = 0; d < dim; ++d) {
    const scalar_t t = knn_grad_term(g, q[d], r[d]);
    grad_q[d] += t;
    grad_r[d] -= t;
  }
}

}  // namespace flowam
