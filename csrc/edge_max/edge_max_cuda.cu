// Gather-max over kNN neighbours on the GPU: one thread per output element (point, channel),
// the threads of a warp on consecutive channels, so each neighbour row is read coalesced; the
// winning point index is kept for the backward, by the CPU's rule (edge_max_math.h).
//
// The backward is the CPU's scatter-add of each gradient to its argmax neighbour, turned into
// a gather: the entries are grouped by target (point, channel) with a stable sort
// (stable_groups), and each output element sums its group front to back, which is the CPU's
// order. No float atomics: runs agree bit for bit (with the CPU's too), whether or not torch's
// deterministic mode is on.
#include <ATen/Dispatch.h>
#include <ATen/ops/arange.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>

#include <cstdint>

#include "cuda_common.cuh"
#include "edge_max/edge_max_checks.h"
#include "edge_max/edge_max_math.h"
#include "ops.h"

namespace flowam {
namespace {

constexpr int kThreads = 256;

template <typename T, typename index_t>
__global__ void edge_max_forward_kernel(const T* __restrict__ feat, const index_t* __restrict__ idx, int64_t N,
                                        int64_t M, int64_t k, int64_t C, int64_t total, T* __restrict__ out,
                                        int64_t* __restrict__ arg) {
  FLOWAM_GRID_STRIDE_LOOP(e, total) {
    const int64_t row = e / C, c = e % C;
    const index_t* nb = idx + row * k;
    const T* f = feat + (row / M) * N * C + c;
    T best = f[int64_t(nb[0]) * C];
    int64_t slot = 0;
    for (int64_t p = 1; p < k; ++p) edge_max_step(f[int64_t(nb[p]) * C], p, best, slot);
    out[e] = best;
    arg[e] = nb[slot];
  }
}

// grad_feat[b,j,c] = the sum of grad_out[b,i,c] over the i whose maximum came from point j: the
// group of output element (b*N + j)*C + c.
template <typename T>
__global__ void edge_max_backward_kernel(const T* __restrict__ g, const int64_t* __restrict__ order,
                                         const int64_t* __restrict__ offsets, int64_t total, T* __restrict__ grad) {
  FLOWAM_GRID_STRIDE_LOOP(o, total) {
    T acc = 0;
    for (int64_t s = offsets[o]; s < offsets[o + 1]; ++s) acc += g[order[s]];
    grad[o] = acc;
  }
}

}  // namespace
}  // namespace flowam

flowam::TensorPair flowam::edge_max_forward_cuda(const at::Tensor& feat, const at::Tensor& idx) {
  static constexpr const char* op = "edge_max_forward_cuda";
  edge_max_check_forward(feat, idx, c10::DeviceType::CUDA, op);
  const c10::cuda::CUDAGuard guard(feat.device());
  const int64_t B = feat.size(0), N = feat.size(1), C = feat.size(2);
  const int64_t M = idx.size(1), k = idx.size(2);
  auto out = at::empty({B, M, C}, feat.options());
  auto arg = at::empty({B, M, C}, feat.options().dtype(at::kLong));
  const int64_t total = out.numel();
  if (total == 0) return {out, arg};
  const cudaStream_t stream = current_stream();
  AT_DISPATCH_FLOATING_TYPES(feat.scalar_type(), op, [&] {
    if (idx.scalar_type() == at::kLong)
      edge_max_forward_kernel<scalar_t, int64_t><<<stride_blocks(total, kThreads), kThreads, 0, stream>>>(
          feat.data_ptr<scalar_t>(), idx.data_ptr<int64_t>(), N, M, k, C, total, out.data_ptr<scalar_t>(),
          arg.data_ptr<int64_t>());
    else
      edge_max_forward_kernel<scalar_t, int32_t><<<stride_blocks(total, kThreads), kThreads, 0, stream>>>(
          feat.data_ptr<scalar_t>(), idx.data_ptr<int32_t>(), N, M, k, C, total, out.data_ptr<scalar_t>(),
          arg.data_ptr<int64_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {out, arg};
}

at::Tensor flowam::edge_max_backward_cuda(const at::Tensor& grad_out, const at::Tensor& argmax, int64_t num_points) {
  static constexpr const char* op = "edge_max_backward_cuda";
  edge_max_check_backward(grad_out, argmax, num_points, c10::DeviceType::CUDA, op);
  const c10::cuda::CUDAGuard guard(grad_out.device());
  const int64_t B = grad_out.size(0), C = grad_out.size(2), N = num_points;
  if (grad_out.numel() == 0) return at::zeros({B, N, C}, grad_out.options());
  auto grad_feat = at::empty({B, N, C}, grad_out.options());
  // Entry (b, i, c) goes to output element (b*N + argmax)*C + c.
  const at::Tensor base = at::arange(B, argmax.options()).mul_(N).view({B, 1, 1});
  const at::Tensor channel = at::arange(C, argmax.options()).view({1, 1, C});
  const Groups groups = stable_groups(argmax.add(base).mul_(C).add_(channel), grad_feat.numel());
  const int64_t total = grad_feat.numel();
  AT_DISPATCH_FLOATING_TYPES(grad_out.scalar_type(), op, [&] {
    edge_max_backward_kernel<scalar_t><<<stride_blocks(total, kThreads), kThreads, 0, current_stream()>>>(
        grad_out.data_ptr<scalar_t>(), groups.order.data_ptr<int64_t>(), groups.offsets.data_ptr<int64_t>(), total,
        grad_feat.data_ptr<scalar_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return grad_feat;
}
