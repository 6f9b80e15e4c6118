// linear_max on the GPU: out[b,c] = max_n act(scale[c] * (W x[b,n])[c] + shift[c]).
//
// A block owns one sample and a tile of kTileC output channels and walks all the sample's
// points, kTileP at a time: a shared-memory GEMM tile (kTileK input channels per stage, two
// stages deep, the next stage's global loads in flight during the current stage's FMAs), each
// thread an 8 x 8 register tile, and in the epilogue the affine map, the activation and a
// running max with its argmax (linear_max_math.h), so the (B, N, Cout) activation is never
// written. At the end the block's 16 rows of threads merge their maxima (larger value, then
// smaller index). Each W x is summed over the input channels in increasing order, as on the
// CPU, in plain FMAs.
//
// The backward touches only each channel's argmax point: one thread per (sample, channel)
// recomputes W x there in the forward's order (bit for bit the forward's value, so act' is
// taken on the same side of the kink), then grad_x is gathered per point over the channels
// whose argmax it is (stable_groups, in channel order) and the parameter gradients per channel
// over the samples in order. No float atomics: runs agree bit for bit.
#include <ATen/Dispatch.h>
#include <ATen/ops/arange.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/zeros_like.h>

#include <cstdint>
#include <limits>

#include "cuda_common.cuh"
#include "linear_max/linear_max_checks.h"
#include "linear_max/linear_max_math.h"
#include "ops.h"

namespace flowam {
namespace {

constexpr int kTileP = 128;  // points per block tile
constexpr int kTileC = 128;  // output channels per block
constexpr int kTileK = 8;    // input channels per shared-memory stage
constexpr int kThreads = 256;  // 16 x 16 threads
constexpr int kPad = 4;        // keeps the transposed stores off one bank, and rows 16-byte aligned

// Thread (tx, ty) computes points ty*4 + {0..3} and 64 + ty*4 + {0..3} of the tile, and
// channels tx*4 + {0..3} and 64 + tx*4 + {0..3}: four consecutive values per shared-memory
// read (one vector load), and the 16 threads of a half-warp on consecutive 16-byte words.
__device__ __forceinline__ int tile_pos(int t, int u) { return (u < 4 ? t * 4 : 64 + t * 4) + (u & 3); }

template <typename T>
__device__ __forceinline__ void load4(const T* p, T* out) {
#pragma unroll
  for (int u = 0; u < 4; ++u) out[u] = p[u];
}
template <>
__device__ __forceinline__ void load4<float>(const float* p, float* out) {
  const float4 v = *reinterpret_cast<const float4*>(p);
  out[0] = v.x, out[1] = v.y, out[2] = v.z, out[3] = v.w;
}

// Which of two (value, point) candidates wins: the larger value, and on equal values the
// smaller point, so the merged result is the running max's first maximizer.
template <typename T>
__device__ __forceinline__ bool beats(T v, int32_t n, T best, int32_t best_n) {
  return v > best || (v == best && n < best_n);
}

// Two blocks per multiprocessor in float32 (128 registers a thread, no spills); float64 is for
// gradcheck, so it may have all the registers.
template <typename T>
__global__ void __launch_bounds__(kThreads, sizeof(T) == 4 ? 2 : 1)
    linear_max_forward_kernel(const T* __restrict__ x, const T* __restrict__ w, const T* __restrict__ scale,
                              const T* __restrict__ shift, T slope, int64_t N, int64_t cin, int64_t cout,
                              int64_t channel_tiles, T* __restrict__ out, int64_t* __restrict__ argmax) {
  // Two stages of (x, W) tiles: stage s + 1 is stored while stage s is read, one barrier a
  // stage. Once the GEMM is done the same memory holds the merge of the threads' maxima.
  __shared__ __align__(16) T stage[2][2][kTileK][kTileP + kPad];
  static_assert(kTileP == kTileC, "x and W tiles share the stage layout");
  static_assert(sizeof(stage) >= 16 * kTileC * (sizeof(T) + sizeof(int32_t)), "the merge fits in the stages");
  auto merge_v = reinterpret_cast<T(*)[kTileC]>(&stage[0][0][0][0]);
  auto merge_n = reinterpret_cast<int32_t(*)[kTileC]>(&stage[0][0][0][0] + 16 * kTileC);

  const int64_t b = blockIdx.x / channel_tiles;
  const int64_t c0 = (blockIdx.x % channel_tiles) * kTileC;
  const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
  const T* xb = x + b * N * cin;
  // The loader's share of a stage: 4 consecutive input channels of one point and of one
  // weight row (a pair of threads covers a row's kTileK values).
  const int lrow = threadIdx.x / 2, lk = (threadIdx.x % 2) * 4;

  T best[8];
  int32_t best_n[8];
#pragma unroll
  for (int j = 0; j < 8; ++j) {
    best[j] = -std::numeric_limits<T>::infinity();
    best_n[j] = std::numeric_limits<int32_t>::max();
  }

  for (int64_t n0 = 0; n0 < N; n0 += kTileP) {
    T acc[8][8];
#pragma unroll
    for (int i = 0; i < 8; ++i)
#pragma unroll
      for (int j = 0; j < 8; ++j) acc[i][j] = 0;

    T xr[4], wr[4];
    auto load_stage = [&](int64_t k0) {
      const int64_t n = n0 + lrow, c = c0 + lrow;
#pragma unroll
      for (int u = 0; u < 4; ++u) {
        const int64_t k = k0 + lk + u;
        xr[u] = (n < N && k < cin) ? xb[n * cin + k] : T(0);
        wr[u] = (c < cout && k < cin) ? w[c * cin + k] : T(0);
      }
    };
    auto store_stage = [&](int buf) {
#pragma unroll
      for (int u = 0; u < 4; ++u) {
        stage[buf][0][lk + u][lrow] = xr[u];
        stage[buf][1][lk + u][lrow] = wr[u];
      }
    };
    if (cin > 0) {
      load_stage(0);
      store_stage(0);
      __syncthreads();
    }
    // Stage s is read from buffer s % 2 while stage s + 1 goes to the other one, which every
    // thread finished reading before the barrier that ended stage s - 1.
    int buf = 0;
    for (int64_t k0 = 0; k0 < cin; k0 += kTileK, buf ^= 1) {
      const bool more = k0 + kTileK < cin;
      if (more) load_stage(k0 + kTileK);  // in flight during this stage's FMAs
#pragma unroll
      for (int kk = 0; kk < kTileK; ++kk) {
        T a[8], bw[8];
        load4(&stage[buf][0][kk][ty * 4], a);
        load4(&stage[buf][0][kk][64 + ty * 4], a + 4);
        load4(&stage[buf][1][kk][tx * 4], bw);
        load4(&stage[buf][1][kk][64 + tx * 4], bw + 4);
#pragma unroll
        for (int i = 0; i < 8; ++i)
#pragma unroll
          for (int j = 0; j < 8; ++j) acc[i][j] += a[i] * bw[j];
      }
      if (more) store_stage(buf ^ 1);
      __syncthreads();
    }

#pragma unroll
    for (int j = 0; j < 8; ++j) {
      const int64_t c = c0 + tile_pos(tx, j);
      if (c >= cout) continue;
      const T sc = scale[c], sh = shift[c];
#pragma unroll
      for (int i = 0; i < 8; ++i) {  // increasing points: strict ">" keeps the first maximizer
        const int64_t n = n0 + tile_pos(ty, i);
        if (n < N) running_max(leaky_relu(affine(acc[i][j], sc, sh), slope), static_cast<int32_t>(n), best[j],
                               best_n[j]);
      }
    }
  }

  __syncthreads();  // (cin == 0: no stage barrier ran) nobody reads the stages any more
#pragma unroll
  for (int j = 0; j < 8; ++j) {
    merge_v[ty][tile_pos(tx, j)] = best[j];
    merge_n[ty][tile_pos(tx, j)] = best_n[j];
  }
  __syncthreads();
  if (threadIdx.x < kTileC && c0 + threadIdx.x < cout) {
    T v = merge_v[0][threadIdx.x];
    int32_t n = merge_n[0][threadIdx.x];
    for (int r = 1; r < 16; ++r) {
      if (beats(merge_v[r][threadIdx.x], merge_n[r][threadIdx.x], v, n)) {
        v = merge_v[r][threadIdx.x];
        n = merge_n[r][threadIdx.x];
      }
    }
    // No value above -inf (only NaN or -inf activations): point 0, as the CPU reports it.
    if (n == std::numeric_limits<int32_t>::max()) n = 0;
    out[b * cout + c0 + threadIdx.x] = v;
    argmax[b * cout + c0 + threadIdx.x] = n;
  }
}

// Per (sample, channel): W x at the argmax point, summed as the forward sums it, and the
// gradient d with respect to the pre-activation there.
template <typename T>
__global__ void linear_max_dz_kernel(const T* __restrict__ g, const T* __restrict__ x, const T* __restrict__ w,
                                     const T* __restrict__ scale, const T* __restrict__ shift,
                                     const int64_t* __restrict__ argmax, T slope, int64_t N, int64_t cin,
                                     int64_t cout, int64_t total, T* __restrict__ dz, T* __restrict__ wx) {
  FLOWAM_GRID_STRIDE_LOOP(e, total) {
    const int64_t b = e / cout, c = e % cout;
    const T* xr = x + (b * N + argmax[e]) * cin;
    const T* wc = w + c * cin;
    T acc = 0;
    for (int64_t k = 0; k < cin; ++k) acc += xr[k] * wc[k];
    wx[e] = acc;
    dz[e] = linear_max_dz(g[e], acc, scale[c], shift[c], slope);
  }
}

// grad_x[b,n,k] = the sum of d * scale[c] * W[c,k] over the channels c whose argmax is n, in
// channel order (the CPU's); zero at every other point.
template <typename T>
__global__ void linear_max_grad_x_kernel(const T* __restrict__ dz, const T* __restrict__ w,
                                         const T* __restrict__ scale, const int64_t* __restrict__ order,
                                         const int64_t* __restrict__ offsets, int64_t cin, int64_t cout,
                                         int64_t total, T* __restrict__ grad_x) {
  FLOWAM_GRID_STRIDE_LOOP(e, total) {
    const int64_t point = e / cin, k = e % cin;
    T acc = 0;
    for (int64_t s = offsets[point]; s < offsets[point + 1]; ++s) {
      const int64_t entry = order[s], c = entry % cout;
      const T d = dz[entry];
      if (d == T(0)) continue;
      acc += (d * scale[c]) * w[c * cin + k];
    }
    grad_x[e] = acc;
  }
}

// One block per output channel: grad_weight over the samples in order, and grad_scale,
// grad_shift (thread 0), as the CPU's second pass computes them.
template <typename T>
__global__ void linear_max_grad_params_kernel(const T* __restrict__ dz, const T* __restrict__ wx,
                                              const T* __restrict__ x, const T* __restrict__ scale,
                                              const int64_t* __restrict__ argmax, int64_t B, int64_t N,
                                              int64_t cin, int64_t cout, T* __restrict__ grad_w,
                                              T* __restrict__ grad_scale, T* __restrict__ grad_shift) {
  const int64_t c = blockIdx.x;
  const T sc = scale[c];
  for (int64_t k = threadIdx.x; k < cin; k += blockDim.x) {
    T acc = 0;
    for (int64_t b = 0; b < B; ++b) {
      const T d = dz[b * cout + c];
      if (d == T(0)) continue;
      acc += (d * sc) * x[(b * N + argmax[b * cout + c]) * cin + k];
    }
    grad_w[c * cin + k] = acc;
  }
  if (threadIdx.x == 0) {
    T s_acc = 0, h_acc = 0;
    for (int64_t b = 0; b < B; ++b) {
      const T d = dz[b * cout + c];
      s_acc += d * wx[b * cout + c];
      h_acc += d;
    }
    grad_scale[c] = s_acc;
    grad_shift[c] = h_acc;
  }
}

}  // namespace
}  // namespace flowam

flowam::TensorPair flowam::linear_max_forward_cuda(const at::Tensor& x, const at::Tensor& weight,
                                                   const at::Tensor& scale, const at::Tensor& shift,
                                                   double negative_slope) {
  static constexpr const char* op = "linear_max_forward_cuda";
  linear_max_check_inputs(x, weight, scale, shift, negative_slope, c10::DeviceType::CUDA, op);
  const c10::cuda::CUDAGuard guard(x.device());
  const int64_t B = x.size(0), N = x.size(1), cin = x.size(2), cout = weight.size(0);
  at::Tensor out = at::empty({B, cout}, x.options());
  at::Tensor argmax = at::empty({B, cout}, x.options().dtype(at::kLong));
  if (out.numel() == 0) return {out, argmax};
  const int64_t tiles = ceil_div(cout, kTileC);
  TORCH_CHECK(B * tiles <= std::numeric_limits<int32_t>::max(), op, ": too many samples and channels");
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), op, [&] {
    linear_max_forward_kernel<scalar_t><<<static_cast<unsigned int>(B * tiles), kThreads, 0, current_stream()>>>(
        x.data_ptr<scalar_t>(), weight.data_ptr<scalar_t>(), scale.data_ptr<scalar_t>(), shift.data_ptr<scalar_t>(),
        static_cast<scalar_t>(negative_slope), N, cin, cout, tiles, out.data_ptr<scalar_t>(),
        argmax.data_ptr<int64_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {out, argmax};
}

flowam::TensorQuad flowam::linear_max_backward_cuda(const at::Tensor& grad_out, const at::Tensor& x,
                                                    const at::Tensor& weight, const at::Tensor& scale,
                                                    const at::Tensor& shift, const at::Tensor& argmax,
                                                    double negative_slope) {
  static constexpr const char* op = "linear_max_backward_cuda";
  linear_max_check_backward(grad_out, x, weight, scale, shift, argmax, negative_slope, c10::DeviceType::CUDA, op);
  const c10::cuda::CUDAGuard guard(x.device());
  const int64_t B = x.size(0), N = x.size(1), cin = x.size(2), cout = weight.size(0);
  at::Tensor grad_x = at::empty_like(x);
  at::Tensor grad_w = at::empty_like(weight);
  at::Tensor grad_scale = at::empty_like(scale);
  at::Tensor grad_shift = at::empty_like(shift);
  if (B == 0 || cout == 0) {  // nothing reaches any point or parameter
    return {grad_x.zero_(), grad_w.zero_(), grad_scale.zero_(), grad_shift.zero_()};
  }
  at::Tensor dz = at::empty({B, cout}, x.options());
  at::Tensor wx = at::empty({B, cout}, x.options());
  // Entry (b, c) goes to point b*N + argmax[b, c].
  const Groups groups = stable_groups(argmax.add(at::arange(B, argmax.options()).mul_(N).view({B, 1})), B * N);
  const cudaStream_t stream = current_stream();
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), op, [&] {
    const scalar_t slope = static_cast<scalar_t>(negative_slope);
    linear_max_dz_kernel<scalar_t><<<stride_blocks(B * cout, 256), 256, 0, stream>>>(
        grad_out.data_ptr<scalar_t>(), x.data_ptr<scalar_t>(), weight.data_ptr<scalar_t>(),
        scale.data_ptr<scalar_t>(), shift.data_ptr<scalar_t>(), argmax.data_ptr<int64_t>(), slope, N, cin, cout,
        B * cout, dz.data_ptr<scalar_t>(), wx.data_ptr<scalar_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    if (grad_x.numel() > 0) {
      linear_max_grad_x_kernel<scalar_t><<<stride_blocks(grad_x.numel(), 256), 256, 0, stream>>>(
          dz.data_ptr<scalar_t>(), weight.data_ptr<scalar_t>(), scale.data_ptr<scalar_t>(),
          groups.order.data_ptr<int64_t>(), groups.offsets.data_ptr<int64_t>(), cin, cout, grad_x.numel(),
          grad_x.data_ptr<scalar_t>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
    TORCH_CHECK(cout <= std::numeric_limits<int32_t>::max(), op, ": too many output channels");
    linear_max_grad_params_kernel<scalar_t><<<static_cast<unsigned int>(cout), 128, 0, stream>>>(
        dz.data_ptr<scalar_t>(), wx.data_ptr<scalar_t>(), x.data_ptr<scalar_t>(), scale.data_ptr<scalar_t>(),
        argmax.data_ptr<int64_t>(), B, N, cin, cout, grad_w.data_ptr<scalar_t>(), grad_scale.data_ptr<scalar_t>(),
        grad_shift.data_ptr<scalar_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {grad_x, grad_w, grad_scale, grad_shift};
}
