// Farthest point sampling on the GPU: one block per sample. Each thread owns the points
// j = threadIdx.x + t * blockDim.x; at every step it updates their running min distances (in a
// scratch row, read back only by the thread that wrote them) and keeps its first maximum, and a
// block reduction by (distance, index) picks the next point, ties to the smaller index. The
// distance is fps_math.h's sq_dist3, in round-to-nearest intrinsics (no FMA), so the choice is
// the CPU kernel's and the reference's, bit for bit.
#include <ATen/Dispatch.h>
#include <ATen/ops/empty.h>

#include <cstdint>
#include <limits>

#include "cuda_common.cuh"
#include "fps/fps_checks.h"
#include "fps/fps_math.h"
#include "ops.h"

namespace flowam {
namespace {

constexpr int kThreads = 512;
constexpr int kWarps = kThreads / 32;

// The better of (d, i) and the lane `offset` above, for a shuffle reduction.
template <typename T>
__device__ __forceinline__ void fps_merge_down(T& d, int32_t& i, int offset) {
  const T od = __shfl_down_sync(0xffffffffu, d, offset);
  const int32_t oi = __shfl_down_sync(0xffffffffu, i, offset);
  if (fps_better(od, oi, d, i)) {
    d = od;
    i = oi;
  }
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
    fps_kernel(const T* __restrict__ points, int64_t N, int64_t S, T* __restrict__ running,
               int64_t* __restrict__ out) {
  __shared__ T warp_d[kWarps];
  __shared__ int32_t warp_i[kWarps];
  __shared__ int32_t next;
  const int64_t b = blockIdx.x;
  const T* p_b = points + b * N * 3;
  T* run_b = running + b * N;
  int64_t* out_b = out + b * S;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  if (threadIdx.x == 0) out_b[0] = 0;
  int32_t cur = 0;
  for (int64_t s = 1; s < S; ++s) {
    const T cx = p_b[cur * 3], cy = p_b[cur * 3 + 1], cz = p_b[cur * 3 + 2];
    T best_d = -std::numeric_limits<T>::infinity();
    int32_t best_i = 0;
    for (int64_t j = threadIdx.x; j < N; j += kThreads) {
      const T d = sq_dist3(p_b[j * 3], p_b[j * 3 + 1], p_b[j * 3 + 2], cx, cy, cz);
      const T prev = s == 1 ? std::numeric_limits<T>::infinity() : run_b[j];
      const T m = d < prev ? d : prev;
      run_b[j] = m;
      // Strictly greater: a thread sees its points in index order, so it keeps the first.
      if (m > best_d) {
        best_d = m;
        best_i = static_cast<int32_t>(j);
      }
    }
    for (int offset = 16; offset > 0; offset /= 2) fps_merge_down(best_d, best_i, offset);
    if (lane == 0) {
      warp_d[warp] = best_d;
      warp_i[warp] = best_i;
    }
    __syncthreads();
    if (warp == 0) {
      best_d = lane < kWarps ? warp_d[lane] : -std::numeric_limits<T>::infinity();
      best_i = lane < kWarps ? warp_i[lane] : 0;
      for (int offset = 16; offset > 0; offset /= 2) fps_merge_down(best_d, best_i, offset);
      if (lane == 0) {
        next = best_i;
        out_b[s] = best_i;
      }
    }
    __syncthreads();  // `next` is written; the warp sums are read and may be overwritten
    cur = next;
  }
}

}  // namespace
}  // namespace flowam

at::Tensor flowam::farthest_point_sample_cuda(const at::Tensor& points, int64_t num_samples) {
  static constexpr const char* op = "farthest_point_sample_cuda";
  fps_check(points, num_samples, c10::DeviceType::CUDA, op);
  TORCH_CHECK(points.size(0) <= std::numeric_limits<int32_t>::max(), op, ": too many samples (", points.size(0), ")");
  const c10::cuda::CUDAGuard guard(points.device());
  const int64_t B = points.size(0), N = points.size(1);
  auto idx = at::empty({B, num_samples}, points.options().dtype(at::kLong));
  if (B == 0) return idx;
  auto running = at::empty({B, N}, points.options());
  AT_DISPATCH_FLOATING_TYPES(points.scalar_type(), op, [&] {
    fps_kernel<scalar_t><<<static_cast<unsigned int>(B), kThreads, 0, current_stream()>>>(
        points.data_ptr<scalar_t>(), N, num_samples, running.data_ptr<scalar_t>(), idx.data_ptr<int64_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return idx;
}
