// Fused kNN on the GPU. One query point per thread; the reference points stream through
// shared-memory tiles and each thread keeps its k best sorted in registers, so no (M, N)
// distance matrix exists anywhere.
//
// The selection keys are the CPU kernel's (knn_math.h): direct differences up to D = 8, and
// the GEMM form |r|^2 - 2 q.r beyond, in plain FMAs (no tensor cores: TF32 products would
// reorder neighbours against the reference). As on the CPU, the k chosen distances are then
// recomputed exactly by direct differences (the values the gradient belongs to) and ordered by
// (distance, index), so ties go to the smaller index.
//
// The backward gathers rather than scatters: grad_query row by row, grad_ref point by point
// over the entries that chose the point (stable_groups), in the CPU's order. No float atomics:
// two runs agree bit for bit, whether or not torch's deterministic mode is on.
#include <ATen/Dispatch.h>
#include <ATen/ops/arange.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>

#include <cstdint>
#include <limits>
#include <type_traits>

#include "cuda_common.cuh"
#include "knn/knn_checks.h"
#include "knn/knn_math.h"
#include "ops.h"

namespace flowam {
namespace {

// Query rows per block; also the reference points per shared tile of the direct path.
constexpr int kThreads = 128;
// GEMM form: reference points per register tile, and coordinates per shared-memory chunk.
constexpr int kRefTile = 32;
constexpr int kDimChunk = 16;

// The k best candidates so far, in KMAX register slots sorted ascending by (key, index). Only
// the last k slots are real; the first KMAX - k hold (-inf, -1) sentinels that sort below any
// candidate and so never move. The rejection threshold is then always slot KMAX - 1: every
// slot is named by a compile-time index, which keeps the arrays in registers.
template <typename T, int KMAX>
struct TopK {
  T d[KMAX];
  int32_t i[KMAX];

  __device__ __forceinline__ void init(int k) {
#pragma unroll
    for (int p = 0; p < KMAX; ++p) {
      const bool real = p >= KMAX - k;
      d[p] = real ? std::numeric_limits<T>::infinity() : -std::numeric_limits<T>::infinity();
      i[p] = real ? std::numeric_limits<int32_t>::max() : -1;
    }
  }

  // Insertion from the top: a slot the candidate beats takes either the candidate or, when
  // the candidate beats its lower neighbour too, that neighbour; the worst pair falls off.
  __device__ __forceinline__ void offer(T key, int32_t j) {
    key = knn_sanitize(key);
    if (!knn_less(key, j, d[KMAX - 1], i[KMAX - 1])) return;
#pragma unroll
    for (int p = KMAX - 1; p > 0; --p) {
      if (knn_less(key, j, d[p], i[p])) {
        const bool below = knn_less(key, j, d[p - 1], i[p - 1]);
        d[p] = below ? d[p - 1] : key;
        i[p] = below ? i[p - 1] : j;
      }
    }
    if (knn_less(key, j, d[0], i[0])) {
      d[0] = key;
      i[0] = j;
    }
  }
};

// Writes one query's k neighbours: the selected indices with their exact distances, ordered by
// (distance, index). Sorting happens in place in the query's output row (insertion sort: the
// direct path's list is already in order, the GEMM form's nearly so), which leaves the
// registers alone; only the first loop names register slots, so the rest is emitted once.
template <typename T, int KMAX>
__device__ void write_neighbours(const TopK<T, KMAX>& top, const T* q_row, const T* ref_b, int D, int k, T* out_d,
                                 int64_t* out_i) {
#pragma unroll
  for (int p = 0; p < KMAX; ++p)
    if (p >= KMAX - k) out_i[p - (KMAX - k)] = top.i[p];
  for (int p = 0; p < k; ++p) {
    const T dp = knn_sq_dist(q_row, ref_b + out_i[p] * D, int64_t(D));
    const int64_t ip = out_i[p];
    int q = p;
    for (; q > 0 && knn_less(knn_sanitize(dp), ip, knn_sanitize(out_d[q - 1]), out_i[q - 1]); --q) {
      out_d[q] = out_d[q - 1];
      out_i[q] = out_i[q - 1];
    }
    out_d[q] = dp;
    out_i[q] = ip;
  }
}

// Direct differences for D <= DD coordinates; coordinates past D are zero on both sides, which
// adds exact zeros, so the key is the CPU's left-to-right sum over D (bit for bit where both
// compilers fuse the multiply-adds alike) and equals the exact distance write_neighbours
// recomputes.
template <typename T, int DD, int KMAX>
__global__ void __launch_bounds__(kThreads)
    knn_direct_kernel(const T* __restrict__ query, const T* __restrict__ ref, int64_t M, int64_t N, int D, int k,
                      int64_t blocks_per_batch, T* __restrict__ out_d, int64_t* __restrict__ out_i) {
  __shared__ T tile[kThreads][DD];
  const int64_t b = blockIdx.x / blocks_per_batch;
  const int64_t i = (blockIdx.x % blocks_per_batch) * kThreads + threadIdx.x;
  const bool active = i < M;
  const T* q_row = query + (b * M + (active ? i : 0)) * D;
  const T* ref_b = ref + b * N * D;
  T q[DD];
#pragma unroll
  for (int d = 0; d < DD; ++d) q[d] = d < D ? q_row[d] : T(0);
  TopK<T, KMAX> top;
  top.init(k);
  for (int64_t j0 = 0; j0 < N; j0 += kThreads) {
    const int64_t j = j0 + threadIdx.x;
    __syncthreads();  // everyone is done with the previous tile
#pragma unroll
    for (int d = 0; d < DD; ++d) tile[threadIdx.x][d] = (j < N && d < D) ? ref_b[j * D + d] : T(0);
    __syncthreads();
    const int n = static_cast<int>(N - j0 < kThreads ? N - j0 : kThreads);
    if (!active) continue;
    for (int t = 0; t < n; ++t) {
      T acc = 0;
#pragma unroll
      for (int d = 0; d < DD; ++d) acc = knn_sq_acc(acc, q[d], tile[t][d]);
      top.offer(acc, static_cast<int32_t>(j0 + t));
    }
  }
  if (active) write_neighbours(top, q_row, ref_b, D, k, out_d + (b * M + i) * k, out_i + (b * M + i) * k);
}

template <typename T>
__global__ void knn_norms_kernel(const T* __restrict__ ref, int64_t points, int D, T* __restrict__ norms) {
  FLOWAM_GRID_STRIDE_LOOP(j, points) norms[j] = knn_sq_norm(ref + j * D, int64_t(D));
}

// GEMM form for D > kDirectMaxDim: a thread holds the dot products of its query with a tile of
// kRefTile reference points in registers, built up chunk by chunk of coordinates (each chunk
// of the tile read from shared memory by every thread at once, a broadcast). The keys then go
// through shared memory so that the (large, unrolled) insertion code is emitted once.
template <typename T, int KMAX>
__global__ void __launch_bounds__(kThreads)
    knn_gemm_kernel(const T* __restrict__ query, const T* __restrict__ ref, const T* __restrict__ norms, int64_t M,
                    int64_t N, int D, int k, int64_t blocks_per_batch, T* __restrict__ out_d,
                    int64_t* __restrict__ out_i) {
  __shared__ T tile[kRefTile][kDimChunk];
  __shared__ T keys[kRefTile][kThreads];
  const int64_t b = blockIdx.x / blocks_per_batch;
  const int64_t i = (blockIdx.x % blocks_per_batch) * kThreads + threadIdx.x;
  const bool active = i < M;
  const T* q_row = query + (b * M + (active ? i : 0)) * D;
  const T* ref_b = ref + b * N * D;
  const T* norms_b = norms + b * N;
  TopK<T, KMAX> top;
  top.init(k);
  for (int64_t j0 = 0; j0 < N; j0 += kRefTile) {
    T acc[kRefTile];
#pragma unroll
    for (int t = 0; t < kRefTile; ++t) acc[t] = 0;
    for (int c0 = 0; c0 < D; c0 += kDimChunk) {
      __syncthreads();  // everyone is done with the previous chunk
      for (int e = threadIdx.x; e < kRefTile * kDimChunk; e += kThreads) {
        const int t = e / kDimChunk, d = e % kDimChunk;
        const int64_t j = j0 + t;
        tile[t][d] = (j < N && c0 + d < D) ? ref_b[j * D + c0 + d] : T(0);
      }
      __syncthreads();
      T qc[kDimChunk];
#pragma unroll
      for (int d = 0; d < kDimChunk; ++d) qc[d] = c0 + d < D ? q_row[c0 + d] : T(0);
#pragma unroll
      for (int t = 0; t < kRefTile; ++t)
#pragma unroll
        for (int d = 0; d < kDimChunk; ++d) acc[t] += qc[d] * tile[t][d];
    }
    const int n = static_cast<int>(N - j0 < kRefTile ? N - j0 : kRefTile);
#pragma unroll
    for (int t = 0; t < kRefTile; ++t) keys[t][threadIdx.x] = t < n ? knn_gemm_key(norms_b[j0 + t], acc[t]) : T(0);
    if (!active) continue;
    for (int t = 0; t < n; ++t) top.offer(keys[t][threadIdx.x], static_cast<int32_t>(j0 + t));
  }
  if (active) write_neighbours(top, q_row, ref_b, D, k, out_d + (b * M + i) * k, out_i + (b * M + i) * k);
}

// Calls f with a register list size for k: for float32 (the fast paths' dtype) the smallest
// that holds k, from a few sizes per path; for float64 (gradcheck) and the rare direct
// dimensions other than 3, the largest only, which keeps the number of kernels (and the
// build time) down at no cost to the result.
template <bool kAllSizes, bool kSmallSizes, typename F>
void with_list_size(int64_t k, F&& f) {
  static_assert(kKnnCudaMaxK == 64, "with_list_size covers k up to kKnnCudaMaxK");
  if constexpr (kAllSizes && kSmallSizes) {
    if (k <= 8) return f(std::integral_constant<int, 8>{});
    if (k <= 16) return f(std::integral_constant<int, 16>{});
  }
  if constexpr (kAllSizes) {
    if (k <= 32) return f(std::integral_constant<int, 32>{});
  }
  return f(std::integral_constant<int, 64>{});
}

template <typename T>
void forward(const at::Tensor& query, const at::Tensor& ref, int64_t k, at::Tensor& dist2, at::Tensor& idx) {
  const int64_t B = query.size(0), M = query.size(1), N = ref.size(1);
  const int D = static_cast<int>(query.size(2));
  const int64_t per_batch = ceil_div(M, kThreads);
  const dim3 grid(static_cast<unsigned int>(B * per_batch));
  const cudaStream_t stream = current_stream();
  const T* q = query.data_ptr<T>();
  const T* r = ref.data_ptr<T>();
  T* od = dist2.data_ptr<T>();
  int64_t* oi = idx.data_ptr<int64_t>();
  const int kk = static_cast<int>(k);
  constexpr bool fp32 = std::is_same<T, float>::value;
  if (D == 3) {
    with_list_size<fp32, true>(k, [&](auto list) {
      knn_direct_kernel<T, 3, decltype(list)::value><<<grid, kThreads, 0, stream>>>(q, r, M, N, D, kk, per_batch, od,
                                                                                    oi);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  } else if (D <= kDirectMaxDim) {
    knn_direct_kernel<T, kDirectMaxDim, kKnnCudaMaxK><<<grid, kThreads, 0, stream>>>(q, r, M, N, D, kk, per_batch,
                                                                                    od, oi);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  } else {
    at::Tensor norms = at::empty({B * N}, ref.options());
    knn_norms_kernel<T><<<stride_blocks(B * N, 256), 256, 0, stream>>>(r, B * N, D, norms.data_ptr<T>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    with_list_size<fp32, false>(k, [&](auto list) {
      knn_gemm_kernel<T, decltype(list)::value><<<grid, kThreads, 0, stream>>>(q, r, norms.data_ptr<T>(), M, N, D,
                                                                               kk, per_batch, od, oi);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  }
}

// grad_query[b,i,d] = sum over the row's k neighbours, in slot order (the CPU's order).
template <typename T>
__global__ void knn_grad_query_kernel(const T* __restrict__ g, const T* __restrict__ query, const T* __restrict__ ref,
                                      const int64_t* __restrict__ idx, int64_t M, int64_t N, int D, int k,
                                      int64_t total, T* __restrict__ grad_q) {
  FLOWAM_GRID_STRIDE_LOOP(e, total) {
    const int64_t row = e / D, b = row / M;
    const int d = static_cast<int>(e % D);
    const T* r_b = ref + b * N * D;
    const T qd = query[e];
    T acc = 0;
    for (int p = 0; p < k; ++p) acc += knn_grad_term(g[row * k + p], qd, r_b[idx[row * k + p] * D + d]);
    grad_q[e] = acc;
  }
}

// grad_ref[b,j,d] = minus the sum over the (query, slot) entries that chose point j, in entry
// order (the CPU's order): the group of point b*N + j lists them.
template <typename T>
__global__ void knn_grad_ref_kernel(const T* __restrict__ g, const T* __restrict__ query, const T* __restrict__ ref,
                                    const int64_t* __restrict__ order, const int64_t* __restrict__ offsets, int D,
                                    int k, int64_t total, T* __restrict__ grad_r) {
  FLOWAM_GRID_STRIDE_LOOP(e, total) {
    const int64_t point = e / D;
    const int d = static_cast<int>(e % D);
    const T rd = ref[e];
    T acc = 0;
    for (int64_t s = offsets[point]; s < offsets[point + 1]; ++s) {
      const int64_t entry = order[s];
      acc -= knn_grad_term(g[entry], query[(entry / k) * D + d], rd);
    }
    grad_r[e] = acc;
  }
}

}  // namespace
}  // namespace flowam

flowam::TensorPair flowam::knn_forward_cuda(const at::Tensor& query, const at::Tensor& ref, int64_t k) {
  static constexpr const char* op = "knn_forward_cuda";
  knn_check_forward(query, ref, k, c10::DeviceType::CUDA, op);
  TORCH_CHECK(k <= kKnnCudaMaxK, op, ": k must be at most ", kKnnCudaMaxK,
              " on CUDA (each query keeps its k best in registers), got k=", k);
  TORCH_CHECK(ref.size(1) < std::numeric_limits<int32_t>::max(), op, ": too many reference points (", ref.size(1),
              ")");
  TORCH_CHECK(query.size(2) <= std::numeric_limits<int32_t>::max(), op, ": too many coordinates");
  TORCH_CHECK(query.size(0) * ceil_div(query.size(1), kThreads) <= std::numeric_limits<int32_t>::max(), op,
              ": too many query points (", query.size(0), " x ", query.size(1), ")");
  const c10::cuda::CUDAGuard guard(query.device());
  const int64_t B = query.size(0), M = query.size(1);
  auto dist2 = at::empty({B, M, k}, query.options());
  auto idx = at::empty({B, M, k}, query.options().dtype(at::kLong));
  if (B == 0 || M == 0) return {dist2, idx};
  AT_DISPATCH_FLOATING_TYPES(query.scalar_type(), op, [&] { forward<scalar_t>(query, ref, k, dist2, idx); });
  return {dist2, idx};
}

flowam::TensorPair flowam::knn_backward_cuda(const at::Tensor& grad_dist2, const at::Tensor& query,
                                             const at::Tensor& ref, const at::Tensor& idx) {
  static constexpr const char* op = "knn_backward_cuda";
  knn_check_backward(grad_dist2, query, ref, idx, c10::DeviceType::CUDA, op);
  const c10::cuda::CUDAGuard guard(query.device());
  const int64_t B = query.size(0), M = query.size(1), N = ref.size(1), D = query.size(2), k = idx.size(2);
  auto grad_q = at::empty_like(query);
  auto grad_r = at::empty_like(ref);
  if (idx.numel() == 0) return {grad_q.zero_(), grad_r.zero_()};
  const Groups groups = stable_groups(idx.add(at::arange(B, idx.options()).mul_(N).view({B, 1, 1})), B * N);
  const cudaStream_t stream = current_stream();
  AT_DISPATCH_FLOATING_TYPES(query.scalar_type(), op, [&] {
    const scalar_t* g = grad_dist2.data_ptr<scalar_t>();
    const scalar_t* q = query.data_ptr<scalar_t>();
    const scalar_t* r = ref.data_ptr<scalar_t>();
    knn_grad_query_kernel<scalar_t><<<stride_blocks(B * M * D, 256), 256, 0, stream>>>(
        g, q, r, idx.data_ptr<int64_t>(), M, N, static_cast<int>(D), static_cast<int>(k), B * M * D,
        grad_q.data_ptr<scalar_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    knn_grad_ref_kernel<scalar_t><<<stride_blocks(B * N * D, 256), 256, 0, stream>>>(
        g, q, r, groups.order.data_ptr<int64_t>(), groups.offsets.data_ptr<int64_t>(), static_cast<int>(D),
        static_cast<int>(k), B * N * D, grad_r.data_ptr<scalar_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {grad_q, grad_r};
}
