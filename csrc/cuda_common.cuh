// Launch plumbing and the deterministic grouping that the CUDA entry points share.
//
// Streams and devices: every entry point holds a CUDAGuard on its inputs' device and launches
// on PyTorch's current stream. Only c10/cuda headers are used: ATen/cuda/CUDAContext.h pulls
// in the cuBLAS and cuSPARSE headers, which a toolkit without those libraries lacks (DESIGN.md).
#pragma once
#include <ATen/core/Tensor.h>
#include <ATen/ops/arange.h>
#include <ATen/ops/searchsorted.h>
#include <ATen/ops/sort.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <algorithm>
#include <cstdint>
#include <limits>

namespace flowam {

inline cudaStream_t current_stream() { return c10::cuda::getCurrentCUDAStream().stream(); }

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Blocks for a grid-stride loop over n items: enough to fill any current GPU several times
// over, and within the 2^31 - 1 limit of gridDim.x whatever n is.
inline unsigned int stride_blocks(int64_t n, int threads) {
  return static_cast<unsigned int>(std::max<int64_t>(1, std::min<int64_t>(ceil_div(n, threads), 65536)));
}

// Grid-stride loop index in int64: tensors here can exceed 2^31 elements.
#define FLOWAM_GRID_STRIDE_LOOP(i, n)                                                         \
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < (n);                 \
       i += int64_t(blockDim.x) * gridDim.x)

// A scatter-add turned into a gather without float atomics, so sums run in one fixed order.
// Entry e (0 <= e < keys.numel()) goes to group keys[e]; `order` lists the entries sorted by
// group, stably, and group g owns order[offsets[g] .. offsets[g + 1]). Within a group the
// entries keep their original order, which is the order the CPU kernels add them in, so a
// kernel that sums each group front to back adds the CPU's terms in the CPU's order (bit for
// bit the CPU's sum where the terms are computed alike: plain copies, as in edge_max). A stable
// sort of integer keys has one result, so the grouping is deterministic.
struct Groups {
  at::Tensor order;    // int64 (E)
  at::Tensor offsets;  // int64 (num_groups + 1)
};

inline Groups stable_groups(at::Tensor keys, int64_t num_groups) {
  // 32-bit keys halve the radix sort's passes wherever the groups fit.
  if (num_groups < std::numeric_limits<int32_t>::max()) keys = keys.to(at::kInt);
  auto sorted = at::sort(keys.reshape({-1}), /*stable=*/true, /*dim=*/0, /*descending=*/false);
  const at::Tensor bounds = at::arange(num_groups + 1, keys.options());
  return {std::get<1>(sorted), at::searchsorted(std::get<0>(sorted), bounds)};
}

}  // namespace flowam
