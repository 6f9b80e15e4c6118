// group_gather on the GPU: one thread per output element (b, s, k, c), the threads of a warp on
// consecutive channels, so each gathered row of P and each row of Q is read coalesced.
//
// The backward is the CPU's scatter-add into the gathered rows of P turned into a gather: the
// (b, s, k) entries are grouped by target row b*N + idx with a stable sort (stable_groups), and
// each element of grad_P sums its group front to back, which is the CPU's order; grad_Q sums
// each group's K entries in order. The terms are the CPU's (plain copies of grad_out, or 0,
// group_gather_math.h) and no float atomics are used: runs agree bit for bit, and with the
// CPU's given the same output, whether or not torch's deterministic mode is on.
#include <ATen/Dispatch.h>
#include <ATen/ops/arange.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>

#include <cstdint>

#include "cuda_common.cuh"
#include "group_gather/group_gather_checks.h"
#include "group_gather/group_gather_math.h"
#include "ops.h"

namespace flowam {
namespace {

constexpr int kThreads = 256;

template <typename T, typename index_t>
__global__ void group_gather_forward_kernel(const T* __restrict__ P, const T* __restrict__ Q,
                                            const index_t* __restrict__ idx, const T* __restrict__ scale,
                                            const T* __restrict__ shift, int64_t N, int64_t S, int64_t K,
                                            int64_t C, int64_t total, T* __restrict__ out) {
  FLOWAM_GRID_STRIDE_LOOP(e, total) {
    const int64_t entry = e / C, c = e % C;
    const int64_t r = entry / K;  // b * S + s
    const int64_t row = (r / S) * N + int64_t(idx[entry]);
    out[e] = group_gather_value(P[row * C + c], Q[r * C + c], scale[c], shift[c]);
  }
}

// grad_P[t, c] (t = b*N + j) = scale[c] * the sum of the terms of the entries that gathered row
// t, in entry order: the group of target row t.
template <typename T>
__global__ void group_gather_grad_p_kernel(const T* __restrict__ g, const T* __restrict__ out,
                                           const int64_t* __restrict__ order, const int64_t* __restrict__ offsets,
                                           const T* __restrict__ scale, int64_t C, int64_t total,
                                           T* __restrict__ grad_P) {
  FLOWAM_GRID_STRIDE_LOOP(o, total) {
    const int64_t t = o / C, c = o % C;
    T acc = 0;
    for (int64_t s = offsets[t]; s < offsets[t + 1]; ++s) {
      const int64_t i = order[s] * C + c;
      acc += group_gather_grad_term(g[i], out[i]);
    }
    grad_P[o] = scale[c] * acc;
  }
}

// grad_Q[r, c] = -scale[c] * the sum over the group's K entries, in order.
template <typename T>
__global__ void group_gather_grad_q_kernel(const T* __restrict__ g, const T* __restrict__ out,
                                           const T* __restrict__ scale, int64_t K, int64_t C, int64_t total,
                                           T* __restrict__ grad_Q) {
  FLOWAM_GRID_STRIDE_LOOP(o, total) {
    const int64_t r = o / C, c = o % C;
    T acc = 0;
    for (int64_t k = 0; k < K; ++k) {
      const int64_t i = (r * K + k) * C + c;
      acc += group_gather_grad_term(g[i], out[i]);
    }
    grad_Q[o] = -(scale[c] * acc);
  }
}

}  // namespace
}  // namespace flowam

at::Tensor flowam::group_gather_forward_cuda(const at::Tensor& P, const at::Tensor& Q, const at::Tensor& idx,
                                             const at::Tensor& scale, const at::Tensor& shift) {
  static constexpr const char* op = "group_gather_forward_cuda";
  group_gather_check_forward(P, Q, idx, scale, shift, c10::DeviceType::CUDA, op);
  const c10::cuda::CUDAGuard guard(P.device());
  const int64_t B = P.size(0), N = P.size(1), C = P.size(2), S = idx.size(1), K = idx.size(2);
  auto out = at::empty({B, S, K, C}, P.options());
  const int64_t total = out.numel();
  if (total == 0) return out;
  const cudaStream_t stream = current_stream();
  AT_DISPATCH_FLOATING_TYPES(P.scalar_type(), op, [&] {
    if (idx.scalar_type() == at::kLong)
      group_gather_forward_kernel<scalar_t, int64_t><<<stride_blocks(total, kThreads), kThreads, 0, stream>>>(
          P.data_ptr<scalar_t>(), Q.data_ptr<scalar_t>(), idx.data_ptr<int64_t>(), scale.data_ptr<scalar_t>(),
          shift.data_ptr<scalar_t>(), N, S, K, C, total, out.data_ptr<scalar_t>());
    else
      group_gather_forward_kernel<scalar_t, int32_t><<<stride_blocks(total, kThreads), kThreads, 0, stream>>>(
          P.data_ptr<scalar_t>(), Q.data_ptr<scalar_t>(), idx.data_ptr<int32_t>(), scale.data_ptr<scalar_t>(),
          shift.data_ptr<scalar_t>(), N, S, K, C, total, out.data_ptr<scalar_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return out;
}

flowam::TensorPair flowam::group_gather_backward_cuda(const at::Tensor& grad_out, const at::Tensor& out,
                                                      const at::Tensor& idx, const at::Tensor& scale,
                                                      int64_t num_points) {
  static constexpr const char* op = "group_gather_backward_cuda";
  group_gather_check_backward(grad_out, out, idx, scale, num_points, c10::DeviceType::CUDA, op);
  const c10::cuda::CUDAGuard guard(grad_out.device());
  const int64_t B = grad_out.size(0), S = grad_out.size(1), K = grad_out.size(2), C = grad_out.size(3);
  const int64_t N = num_points;
  if (grad_out.numel() == 0)
    return {at::zeros({B, N, C}, grad_out.options()), at::zeros({B, S, C}, grad_out.options())};
  auto grad_P = at::empty({B, N, C}, grad_out.options());
  auto grad_Q = at::empty({B, S, C}, grad_out.options());
  // Entry (b, s, k) gathered row b*N + idx[b, s, k] of P.
  const at::Tensor base = at::arange(B, idx.options().dtype(at::kLong)).mul_(N).view({B, 1, 1});
  const Groups groups = stable_groups(idx.to(at::kLong).add(base), B * N);
  const cudaStream_t stream = current_stream();
  AT_DISPATCH_FLOATING_TYPES(grad_out.scalar_type(), op, [&] {
    group_gather_grad_p_kernel<scalar_t><<<stride_blocks(grad_P.numel(), kThreads), kThreads, 0, stream>>>(
        grad_out.data_ptr<scalar_t>(), out.data_ptr<scalar_t>(), groups.order.data_ptr<int64_t>(),
        groups.offsets.data_ptr<int64_t>(), scale.data_ptr<scalar_t>(), C, grad_P.numel(),
        grad_P.data_ptr<scalar_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    group_gather_grad_q_kernel<scalar_t><<<stride_blocks(grad_Q.numel(), kThreads), kThreads, 0, stream>>>(
        grad_out.data_ptr<scalar_t>(), out.data_ptr<scalar_t>(), scale.data_ptr<scalar_t>(), K, C, grad_Q.numel(),
        grad_Q.data_ptr<scalar_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {grad_P, grad_Q};
}
