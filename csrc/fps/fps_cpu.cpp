// Farthest point sampling on the CPU, one sample (batch entry) per task: the points go to a
// coordinate-major copy, the running min distance of every point lives in one contiguous
// array, and each step updates it and finds its argmax in the same vectorized pass.
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#include <cstdint>
#include <limits>
#include <vector>

#include "fps/fps_checks.h"
#include "fps/fps_math.h"
#include "ops.h"

namespace flowam {
namespace {

// Lanes of the fused pass: each lane keeps the first maximum of the points it sees (every
// lane-th point), and the lanes are merged by (distance, index) at the end of the step.
constexpr int64_t kLanes = 16;

// One sample: pts (N, 3) in, out (S) indices. xyz (3 N) and run (N) are the caller's scratch.
template <typename scalar_t>
FLOWAM_NO_FP_CONTRACT void fps_sample(const scalar_t* pts, int64_t N, int64_t S, scalar_t* xyz, scalar_t* run,
                                      int64_t* out) {
  scalar_t* xs = xyz;
  scalar_t* ys = xyz + N;
  scalar_t* zs = xyz + 2 * N;
  for (int64_t j = 0; j < N; ++j) {
    xs[j] = pts[3 * j];
    ys[j] = pts[3 * j + 1];
    zs[j] = pts[3 * j + 2];
    run[j] = std::numeric_limits<scalar_t>::infinity();
  }
  int32_t cur = 0;
  out[0] = 0;
  for (int64_t s = 1; s < S; ++s) {
    const scalar_t cx = xs[cur], cy = ys[cur], cz = zs[cur];
    scalar_t best_d[kLanes];
    int32_t best_i[kLanes];
    for (int64_t l = 0; l < kLanes; ++l) {
      best_d[l] = -std::numeric_limits<scalar_t>::infinity();
      best_i[l] = 0;
    }
    int64_t j0 = 0;
    for (; j0 + kLanes <= N; j0 += kLanes) {
#pragma omp simd
      for (int64_t l = 0; l < kLanes; ++l) {
        const int64_t j = j0 + l;
        const scalar_t d = sq_dist3(xs[j], ys[j], zs[j], cx, cy, cz);
        const scalar_t m = d < run[j] ? d : run[j];
        run[j] = m;
        // Strictly greater: within a lane the earlier (smaller) index keeps a tie.
        const bool take = m > best_d[l];
        best_d[l] = take ? m : best_d[l];
        best_i[l] = take ? int32_t(j) : best_i[l];
      }
    }
    for (int64_t l = 0; j0 + l < N; ++l) {
      const int64_t j = j0 + l;
      const scalar_t d = sq_dist3(xs[j], ys[j], zs[j], cx, cy, cz);
      const scalar_t m = d < run[j] ? d : run[j];
      run[j] = m;
      if (m > best_d[l]) {
        best_d[l] = m;
        best_i[l] = int32_t(j);
      }
    }
    scalar_t bd = best_d[0];
    int32_t bi = best_i[0];
    for (int64_t l = 1; l < kLanes; ++l) {
      if (fps_better(best_d[l], best_i[l], bd, bi)) {
        bd = best_d[l];
        bi = best_i[l];
      }
    }
    cur = bi;
    out[s] = cur;
  }
}

}  // namespace

at::Tensor farthest_point_sample_cpu(const at::Tensor& points, int64_t num_samples) {
  static constexpr const char* op = "farthest_point_sample_cpu";
  fps_check(points, num_samples, c10::DeviceType::CPU, op);
  const int64_t B = points.size(0), N = points.size(1), S = num_samples;
  auto idx = at::empty({B, S}, points.options().dtype(at::kLong));
  if (B == 0) return idx;
  AT_DISPATCH_FLOATING_TYPES(points.scalar_type(), op, [&] {
    const scalar_t* p = points.data_ptr<scalar_t>();
    int64_t* out = idx.data_ptr<int64_t>();
    at::parallel_for(0, B, 1, [&](int64_t b0, int64_t b1) {
      std::vector<scalar_t> xyz(3 * N), run(N);
      for (int64_t b = b0; b < b1; ++b) fps_sample(p + b * N * 3, N, S, xyz.data(), run.data(), out + b * S);
    });
  });
  return idx;
}

}  // namespace flowam
