// Ball query on the GPU: one centroid per thread. The points stream through shared-memory
// tiles in index order; each thread writes its hits straight into its output row and stops
// at nsample, and the block stops loading tiles once all its centroids are full. The distance
// and the radius are ball_query_math.h's (round-to-nearest intrinsics, no FMA), so the groups
// are the CPU kernel's and the reference's, bit for bit.
#include <ATen/Dispatch.h>
#include <ATen/ops/empty.h>

#include <cstdint>
#include <limits>

#include "ball_query/ball_query_checks.h"
#include "ball_query/ball_query_math.h"
#include "cuda_common.cuh"
#include "ops.h"

namespace flowam {
namespace {

// Centroids per block; also the points per shared tile.
constexpr int kThreads = 128;

template <typename T>
__global__ void __launch_bounds__(kThreads)
    ball_query_kernel(const T* __restrict__ points, const T* __restrict__ centroids, int64_t N, int64_t S,
                      int64_t K, T r2, int64_t blocks_per_batch, int64_t* __restrict__ out) {
  __shared__ T tile[kThreads][3];
  const int64_t b = blockIdx.x / blocks_per_batch;
  const int64_t i = (blockIdx.x % blocks_per_batch) * kThreads + threadIdx.x;
  const bool active = i < S;
  const T* p_b = points + b * N * 3;
  const T* c = centroids + (b * S + (active ? i : 0)) * 3;
  const T cx = c[0], cy = c[1], cz = c[2];
  int64_t* row = out + (b * S + (active ? i : 0)) * K;
  int64_t count = 0;
  int32_t first = 0;
  // The nearest point while the ball is still empty: if it stays empty, the whole cloud.
  T near_d = std::numeric_limits<T>::infinity();
  int32_t near_i = 0;
  for (int64_t j0 = 0; j0 < N; j0 += kThreads) {
    // Also the barrier before the tile is overwritten.
    if (__syncthreads_count(active && count < K) == 0) break;
    const int64_t j = j0 + threadIdx.x;
#pragma unroll
    for (int d = 0; d < 3; ++d) tile[threadIdx.x][d] = j < N ? p_b[j * 3 + d] : T(0);
    __syncthreads();
    if (!active || count >= K) continue;
    const int n = static_cast<int>(N - j0 < kThreads ? N - j0 : kThreads);
    for (int t = 0; t < n; ++t) {
      const T d = sq_dist3(tile[t][0], tile[t][1], tile[t][2], cx, cy, cz);
      const int32_t jt = static_cast<int32_t>(j0 + t);
      if (d <= r2) {
        if (count == 0) first = jt;
        row[count++] = jt;
        if (count == K) break;
      } else if (count == 0 && ball_nearer(d, jt, near_d, near_i)) {
        near_d = d;
        near_i = jt;
      }
    }
  }
  if (!active) return;
  if (count == 0) first = near_i;
  for (int64_t p = count; p < K; ++p) row[p] = first;
}

}  // namespace
}  // namespace flowam

at::Tensor flowam::ball_query_cuda(const at::Tensor& points, const at::Tensor& centroids, double radius,
                                   int64_t nsample) {
  static constexpr const char* op = "ball_query_cuda";
  ball_query_check(points, centroids, radius, nsample, c10::DeviceType::CUDA, op);
  const int64_t B = points.size(0), N = points.size(1), S = centroids.size(1);
  const int64_t per_batch = ceil_div(S, kThreads);
  TORCH_CHECK(B * per_batch <= std::numeric_limits<int32_t>::max(), op, ": too many centroids (", B, " x ", S, ")");
  const c10::cuda::CUDAGuard guard(points.device());
  auto idx = at::empty({B, S, nsample}, points.options().dtype(at::kLong));
  if (B == 0 || S == 0) return idx;
  AT_DISPATCH_FLOATING_TYPES(points.scalar_type(), op, [&] {
    ball_query_kernel<scalar_t><<<static_cast<unsigned int>(B * per_batch), kThreads, 0, current_stream()>>>(
        points.data_ptr<scalar_t>(), centroids.data_ptr<scalar_t>(), N, S, nsample,
        ball_sq_radius<scalar_t>(radius), per_batch, idx.data_ptr<int64_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return idx;
}
