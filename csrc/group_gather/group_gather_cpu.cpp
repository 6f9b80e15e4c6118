// group_gather on the CPU: out[b,s,k,:] = relu(scale * (P[b, idx[b,s,k], :] - Q[b,s,:]) + shift),
// PointNet++'s first shared layer of a set abstraction with its input rewritten as P_j - Q_i.
// Each output row is one pass over two input rows, vectorized over the contiguous channels.
//
// The backward scatters into the gathered rows of P without atomics: a work item owns one
// channel block of one sample and walks that sample's (s, k) entries in order, so no two
// threads write the same element and every sum runs in one order whatever the thread count
// (the CUDA kernel's order too). The same walk sums grad_Q over each group's K entries.
// Per-operator headers: <ATen/ATen.h> declares every ATen op and was most of the build time.
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>

#include "group_gather/group_gather_checks.h"
#include "group_gather/group_gather_math.h"
#include "ops.h"

namespace flowam {
namespace {

// Channels per backward work item: 128 or 256 contiguous bytes of each row, so two threads
// rarely share a cache line, and a sample of 64 channels still splits over several threads.
constexpr int64_t kChannelBlock = 32;

// Rows per parallel task such that a task moves at least ~2^16 elements: small calls
// (gradcheck) then run inline instead of waking the thread pool.
int64_t grain(int64_t elements_per_row) {
  return std::max<int64_t>(1, (int64_t(1) << 16) / std::max<int64_t>(elements_per_row, 1));
}

template <typename T, typename index_t>
void forward_kernel(const T* P, const T* Q, const index_t* idx, const T* scale, const T* shift, int64_t B,
                    int64_t N, int64_t S, int64_t K, int64_t C, T* out) {
  at::parallel_for(0, B * S, grain(K * C), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {  // r = b * S + s: one group
      const T* p_b = P + (r / S) * N * C;
      const T* q = Q + r * C;
      for (int64_t k = 0; k < K; ++k) {
        const T* p = p_b + int64_t(idx[r * K + k]) * C;
        T* o = out + (r * K + k) * C;
#pragma omp simd
        for (int64_t c = 0; c < C; ++c) o[c] = group_gather_value(p[c], q[c], scale[c], shift[c]);
      }
    }
  });
}

template <typename T, typename index_t>
void backward_kernel(const T* g, const T* out, const index_t* idx, const T* scale, int64_t B, int64_t N, int64_t S,
                     int64_t K, int64_t C, T* gP, T* gQ) {
  const int64_t nblk = (C + kChannelBlock - 1) / kChannelBlock;
  at::parallel_for(0, B * nblk, 1, [&](int64_t w0, int64_t w1) {
    for (int64_t w = w0; w < w1; ++w) {
      const int64_t b = w / nblk, c0 = (w % nblk) * kChannelBlock, c1 = std::min(C, c0 + kChannelBlock);
      T* gp_b = gP + b * N * C;  // zeros on entry
      T q_acc[kChannelBlock];
      for (int64_t s = 0; s < S; ++s) {
        const int64_t r = b * S + s;
        for (int64_t c = c0; c < c1; ++c) q_acc[c - c0] = T(0);
        for (int64_t k = 0; k < K; ++k) {
          const int64_t e = r * K + k;
          const T* g_row = g + e * C;
          const T* o_row = out + e * C;
          T* gp_row = gp_b + int64_t(idx[e]) * C;
#pragma omp simd
          for (int64_t c = c0; c < c1; ++c) {
            const T t = group_gather_grad_term(g_row[c], o_row[c]);
            gp_row[c] += t;
            q_acc[c - c0] += t;
          }
        }
        T* gq_row = gQ + r * C;
        for (int64_t c = c0; c < c1; ++c) gq_row[c] = -(scale[c] * q_acc[c - c0]);
      }
      // The chain rule's factor scale, once per sum rather than once per term.
      for (int64_t j = 0; j < N; ++j) {
        T* gp_row = gp_b + j * C;
#pragma omp simd
        for (int64_t c = c0; c < c1; ++c) gp_row[c] = scale[c] * gp_row[c];
      }
    }
  });
}

}  // namespace

at::Tensor group_gather_forward_cpu(const at::Tensor& P, const at::Tensor& Q, const at::Tensor& idx,
                                    const at::Tensor& scale, const at::Tensor& shift) {
  static constexpr const char* op = "group_gather_forward_cpu";
  group_gather_check_forward(P, Q, idx, scale, shift, c10::DeviceType::CPU, op);
  const int64_t B = P.size(0), N = P.size(1), C = P.size(2), S = idx.size(1), K = idx.size(2);
  auto out = at::empty({B, S, K, C}, P.options());
  if (out.numel() == 0) return out;
  AT_DISPATCH_FLOATING_TYPES(P.scalar_type(), op, [&] {
    if (idx.scalar_type() == at::kLong)
      forward_kernel(P.data_ptr<scalar_t>(), Q.data_ptr<scalar_t>(), idx.data_ptr<int64_t>(),
                     scale.data_ptr<scalar_t>(), shift.data_ptr<scalar_t>(), B, N, S, K, C, out.data_ptr<scalar_t>());
    else
      forward_kernel(P.data_ptr<scalar_t>(), Q.data_ptr<scalar_t>(), idx.data_ptr<int32_t>(),
                     scale.data_ptr<scalar_t>(), shift.data_ptr<scalar_t>(), B, N, S, K, C, out.data_ptr<scalar_t>());
  });
  return out;
}

TensorPair group_gather_backward_cpu(const at::Tensor& grad_out, const at::Tensor& out,
                                     const at::Tensor& idx, const at::Tensor& scale,
                                     int64_t num_points) {
  static constexpr const char* op = "group_gather_backward_cpu";
  group_gather_check_backward(grad_out, out, idx, scale, num_points, c10::DeviceType::CPU, op);
  const int64_t B = grad_out.size(0), S = grad_out.size(1), K = grad_out.size(2), C = grad_out.size(3);
  auto grad_P = at::zeros({B, num_points, C}, grad_out.options());
  auto grad_Q = at::zeros({B, S, C}, grad_out.options());
  if (grad_out.numel() == 0) return {grad_P, grad_Q};
  AT_DISPATCH_FLOATING_TYPES(grad_out.scalar_type(), op, [&] {
    if (idx.scalar_type() == at::kLong)
      backward_kernel(grad_out.data_ptr<scalar_t>(), out.data_ptr<scalar_t>(), idx.data_ptr<int64_t>(),
                      scale.data_ptr<scalar_t>(), B, num_points, S, K, C, grad_P.data_ptr<scalar_t>(),
                      grad_Q.data_ptr<scalar_t>());
    else
      backward_kernel(grad_out.data_ptr<scalar_t>(), out.data_ptr<scalar_t>(), idx.data_ptr<int32_t>(),
                      scale.data_ptr<scalar_t>(), B, num_points, S, K, C, grad_P.data_ptr<scalar_t>(),
                      grad_Q.data_ptr<scalar_t>());
  });
  return {grad_P, grad_Q};
}

}  // namespace flowam
