// Ball query on the CPU: each centroid scans the points in index order, a vectorized block of
// squared distances at a time against a coordinate-major copy of its sample's points, and
// stops at nsample hits. No (S, N) distance matrix, no sort.
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>
#include <limits>
#include <vector>

#include "ball_query/ball_query_checks.h"
#include "ball_query/ball_query_math.h"
#include "ops.h"

namespace flowam {
namespace {

// Points per block: one vectorized pass computes their distances; a block without a hit
// (most of them, for the small radii of PointNet++) costs nothing more.
constexpr int64_t kBlock = 16;
// Centroids per parallel task.
constexpr int64_t kRowsPerTask = 16;

// The group of one centroid c (3 coordinates) among the N points of xyz (3 N, coordinate-
// major). hits needs room for K + kBlock entries.
template <typename scalar_t>
FLOWAM_NO_FP_CONTRACT void ball_group(const scalar_t* xyz, int64_t N, const scalar_t* c, scalar_t r2, int64_t K,
                                      int32_t* hits, int64_t* out) {
  const scalar_t* xs = xyz;
  const scalar_t* ys = xyz + N;
  const scalar_t* zs = xyz + 2 * N;
  const scalar_t cx = c[0], cy = c[1], cz = c[2];
  int64_t count = 0;
  int64_t j0 = 0;
  for (; j0 + kBlock <= N && count < K; j0 += kBlock) {
    scalar_t d[kBlock];
    int32_t inside = 0;
#pragma omp simd reduction(+ : inside)
    for (int64_t l = 0; l < kBlock; ++l) {
      d[l] = sq_dist3(xs[j0 + l], ys[j0 + l], zs[j0 + l], cx, cy, cz);
      inside += d[l] <= r2;
    }
    if (inside == 0) continue;
    for (int64_t l = 0; l < kBlock; ++l) {
      hits[count] = int32_t(j0 + l);
      count += d[l] <= r2;
    }
  }
  for (; j0 < N && count < K; ++j0) {
    hits[count] = int32_t(j0);
    count += sq_dist3(xs[j0], ys[j0], zs[j0], cx, cy, cz) <= r2;
  }
  if (count == 0) {
    // An empty ball: the nearest point in every slot.
    scalar_t best_d = std::numeric_limits<scalar_t>::infinity();
    int32_t best_i = 0;
    for (int64_t j = 0; j < N; ++j) {
      const scalar_t dj = sq_dist3(xs[j], ys[j], zs[j], cx, cy, cz);
      if (ball_nearer(dj, int32_t(j), best_d, best_i)) {
        best_d = dj;
        best_i = int32_t(j);
      }
    }
    hits[0] = best_i;
    count = 1;
  }
  count = std::min(count, K);
  for (int64_t p = 0; p < count; ++p) out[p] = hits[p];
  for (int64_t p = count; p < K; ++p) out[p] = hits[0];
}

}  // namespace

at::Tensor ball_query_cpu(const at::Tensor& points, const at::Tensor& centroids, double radius, int64_t nsample) {
  static constexpr const char* op = "ball_query_cpu";
  ball_query_check(points, centroids, radius, nsample, c10::DeviceType::CPU, op);
  const int64_t B = points.size(0), N = points.size(1), S = centroids.size(1), K = nsample;
  auto idx = at::empty({B, S, K}, points.options().dtype(at::kLong));
  if (B == 0 || S == 0) return idx;
  AT_DISPATCH_FLOATING_TYPES(points.scalar_type(), op, [&] {
    const scalar_t* p = points.data_ptr<scalar_t>();
    const scalar_t* c = centroids.data_ptr<scalar_t>();
    int64_t* out = idx.data_ptr<int64_t>();
    const scalar_t r2 = ball_sq_radius<scalar_t>(radius);
    // (B, 3, N): coordinate-major, so a block's distances load each coordinate contiguously.
    std::vector<scalar_t> xyz(B * 3 * N);
    at::parallel_for(0, B, 1, [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b)
        for (int64_t j = 0; j < N; ++j)
          for (int64_t d = 0; d < 3; ++d) xyz[(b * 3 + d) * N + j] = p[(b * N + j) * 3 + d];
    });
    at::parallel_for(0, B * S, kRowsPerTask, [&](int64_t r0, int64_t r1) {
      std::vector<int32_t> hits(K + kBlock);
      for (int64_t r = r0; r < r1; ++r)
        ball_group(xyz.data() + (r / S) * 3 * N, N, c + r * 3, r2, K, hits.data(), out + r * K);
    });
  });
  return idx;
}

}  // namespace flowam
