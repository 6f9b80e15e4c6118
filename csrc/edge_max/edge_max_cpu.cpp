// Gather-max over kNN neighbours without the (B, M, k, C) gather: each output row is built in
// place from its k neighbour rows, vectorized over the contiguous channels, with the winning
// point index kept for the backward scatter.
// Per-operator headers: <ATen/ATen.h> declares every ATen op and was most of the build time.
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>
#include <cstring>

#include "edge_max/edge_max_checks.h"
#include "edge_max/edge_max_math.h"
#include "ops.h"

namespace flowam {
namespace {

// Channels per backward work item: 256 or 512 contiguous bytes of each row, so two threads
// rarely write to the same cache line.
constexpr int64_t kChannelBlock = 64;

// One 64-byte vector of values and the matching vector of neighbour slots (GCC/Clang vector
// extensions: the compiler keeps them in registers, which it does not do for plain arrays
// carried across the loop over neighbours), and the one-lane version for leftover channels.
template <typename scalar_t>
struct VectorLanes;
template <>
struct VectorLanes<float> {
  typedef float value __attribute__((vector_size(64)));
  typedef int32_t slot __attribute__((vector_size(64)));
  typedef int32_t slot_elem;
};
template <>
struct VectorLanes<double> {
  typedef double value __attribute__((vector_size(64)));
  typedef int64_t slot __attribute__((vector_size(64)));
  typedef int64_t slot_elem;
};
template <typename scalar_t>
struct ScalarLanes {
  typedef scalar_t value;
  typedef int32_t slot;
  typedef int32_t slot_elem;
};

// Channels c0 .. c0 + U * lanes of one output row through all k neighbours: U independent
// running maxima hide the compare-and-select latency, and the winning slot becomes the point
// index only once, at the end.
template <typename Lanes, int U, typename scalar_t, typename index_t>
inline void max_over_neighbours(const scalar_t* f_b, const index_t* nb, int64_t k, int64_t C, int64_t c0,
                                scalar_t* o, int64_t* a) {
  using V = typename Lanes::value;
  using S = typename Lanes::slot;
  using s_elem = typename Lanes::slot_elem;
  constexpr int64_t L = sizeof(V) / sizeof(scalar_t);
  V best[U];
  S slot[U];
  const scalar_t* src0 = f_b + int64_t(nb[0]) * C + c0;
  for (int u = 0; u < U; ++u) {
    std::memcpy(&best[u], src0 + u * L, sizeof(V));
    slot[u] = S{};
  }
  for (int64_t p = 1; p < k; ++p) {
    const scalar_t* src = f_b + int64_t(nb[p]) * C + c0;
    const S ps = S{} + static_cast<s_elem>(p);
    for (int u = 0; u < U; ++u) {
      V v;
      std::memcpy(&v, src + u * L, sizeof(V));
      edge_max_step(v, ps, best[u], slot[u]);
    }
  }
  for (int u = 0; u < U; ++u) {
    s_elem s[L];
    std::memcpy(o + c0 + u * L, &best[u], sizeof(V));
    std::memcpy(s, &slot[u], sizeof(S));
    for (int64_t l = 0; l < L; ++l) a[c0 + u * L + l] = nb[s[l]];
  }
}

template <typename scalar_t, typename index_t>
void forward_kernel(const scalar_t* feat, const index_t* idx, int64_t B, int64_t N, int64_t M, int64_t k,
                    int64_t C, scalar_t* out, int64_t* arg) {
  using Vec = VectorLanes<scalar_t>;
  constexpr int64_t L = sizeof(typename Vec::value) / sizeof(scalar_t);
  constexpr int U = 4;
  at::parallel_for(0, B * M, 16, [&](int64_t r0, int64_t r1) {
    for (int64_t row = r0; row < r1; ++row) {
      const scalar_t* f_b = feat + (row / M) * N * C;
      const index_t* nb = idx + row * k;
      scalar_t* o = out + row * C;
      int64_t* a = arg + row * C;
      int64_t c0 = 0;
      for (; c0 + U * L <= C; c0 += U * L) max_over_neighbours<Vec, U>(f_b, nb, k, C, c0, o, a);
      for (; c0 + L <= C; c0 += L) max_over_neighbours<Vec, 1>(f_b, nb, k, C, c0, o, a);
      for (; c0 < C; ++c0) max_over_neighbours<ScalarLanes<scalar_t>, 1>(f_b, nb, k, C, c0, o, a);
    }
  });
}

template <typename scalar_t>
void backward_kernel(const scalar_t* g, const int64_t* a, int64_t B, int64_t M, int64_t C, int64_t N,
                     scalar_t* gf) {
  const int64_t nblk = (C + kChannelBlock - 1) / kChannelBlock;
  // A work item owns one channel block of one batch and adds its rows in order: no two
  // threads write the same element, and every sum runs in the same order on every run.
  at::parallel_for(0, B * nblk, 1, [&](int64_t w0, int64_t w1) {
    for (int64_t w = w0; w < w1; ++w) {
      const int64_t b = w / nblk, c0 = (w % nblk) * kChannelBlock, c1 = std::min(C, c0 + kChannelBlock);
      scalar_t* gf_b = gf + b * N * C;
      for (int64_t i = 0; i < M; ++i) {
        const scalar_t* g_row = g + (b * M + i) * C;
        const int64_t* a_row = a + (b * M + i) * C;
        // Distinct channels c never collide, so the scatter of one row vectorizes.
#pragma omp simd
        for (int64_t c = c0; c < c1; ++c) gf_b[a_row[c] * C + c] += g_row[c];
      }
    }
  });
}

}  // namespace

TensorPair edge_max_forward_cpu(const at::Tensor& feat, const at::Tensor& idx) {
  edge_max_check_forward(feat, idx, c10::DeviceType::CPU, "edge_max_forward_cpu");
  const int64_t B = feat.size(0), N = feat.size(1), C = feat.size(2);
  const int64_t M = idx.size(1), k = idx.size(2);
  auto out = at::empty({B, M, C}, feat.options());
  auto arg = at::empty({B, M, C}, feat.options().dtype(at::kLong));
  if (out.numel() == 0) return {out, arg};
  AT_DISPATCH_FLOATING_TYPES(feat.scalar_type(), "edge_max_forward_cpu", [&] {
    if (idx.scalar_type() == at::kLong)
      forward_kernel(feat.data_ptr<scalar_t>(), idx.data_ptr<int64_t>(), B, N, M, k, C, out.data_ptr<scalar_t>(),
                     arg.data_ptr<int64_t>());
    else
      forward_kernel(feat.data_ptr<scalar_t>(), idx.data_ptr<int32_t>(), B, N, M, k, C, out.data_ptr<scalar_t>(),
                     arg.data_ptr<int64_t>());
  });
  return {out, arg};
}

at::Tensor edge_max_backward_cpu(const at::Tensor& grad_out, const at::Tensor& argmax, int64_t num_points) {
  edge_max_check_backward(grad_out, argmax, num_points, c10::DeviceType::CPU, "edge_max_backward_cpu");
  const int64_t B = grad_out.size(0), M = grad_out.size(1), C = grad_out.size(2);
  auto grad_feat = at::zeros({B, num_points, C}, grad_out.options());
  if (grad_out.numel() == 0) return grad_feat;
  AT_DISPATCH_FLOATING_TYPES(grad_out.scalar_type(), "edge_max_backward_cpu", [&] {
    backward_kernel(grad_out.data_ptr<scalar_t>(), argmax.data_ptr<int64_t>(), B, M, C, num_points,
                    grad_feat.data_ptr<scalar_t>());
  });
  return grad_feat;
}

}  // namespace flowam
