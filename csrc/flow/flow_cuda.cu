// Activation-flow ops on the GPU: per-class statistics over points (flow_stats) and the
// per-sample alignment loss with its gradient (flow_align), reading acts as (B, C, N) or, with
// points_last, as (B, N, C) (the fast paths' layout), without a transposing copy.
//
// Everything is in double, with the CPU's formulas (flow_math.h): per-(sample, channel) mean
// and M2 by two passes, then each class folds its samples in batch order with Chan's update.
// Every reduction has a fixed shape: a block's point lanes each sum a fixed stride of points,
// and one thread adds the lanes' partial sums in lane order; no atomics. Results are therefore
// bit-identical from run to run (they differ from the CPU's in the last bits, whose
// single-thread rows are summed in another order).
#include <ATen/Dispatch.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>

#include <cstdint>
#include <limits>

#include "cuda_common.cuh"
#include "flow/flow_checks.h"
#include "flow/flow_math.h"
#include "ops.h"

namespace flowam {
namespace {

// Moments blocks are 32 x 8 threads. Points-last: 32 channels (x, consecutive in memory) by 8
// point lanes (y); (B, C, N): 8 channels (y) by 32 point lanes (x, consecutive in memory).
constexpr int kBlockX = 32, kBlockY = 8;

template <bool kPointsLast>
struct MomentsShape {
  static constexpr int kChannels = kPointsLast ? kBlockX : kBlockY;
  static constexpr int kLanes = kPointsLast ? kBlockY : kBlockX;
};

// Per-(sample, channel) mean and M2 over the points into (B, C) arrays.
template <typename T, bool kPointsLast>
__global__ void __launch_bounds__(kBlockX* kBlockY)
    flow_moments_kernel(const T* __restrict__ acts, int64_t C, int64_t N, int64_t channel_blocks,
                        double* __restrict__ mean, double* __restrict__ m2) {
  using Shape = MomentsShape<kPointsLast>;
  __shared__ double part[kBlockY][kBlockX];
  __shared__ double row_mean[Shape::kChannels];
  const int tx = threadIdx.x, ty = threadIdx.y;
  const int lc = kPointsLast ? tx : ty;    // channel within the block
  const int lane = kPointsLast ? ty : tx;  // point lane
  const int64_t b = blockIdx.x / channel_blocks;
  const int64_t c = (blockIdx.x % channel_blocks) * Shape::kChannels + lc;
  const bool valid = c < C;
  const T* a = kPointsLast ? acts + b * N * C + c : acts + (b * C + c) * N;
  const int64_t step = kPointsLast ? C : 1;  // between consecutive points

  // Lane l's partial sums over points l, l + kLanes, ...; lane 0 adds them in lane order.
  auto lane_total = [&](double v) {
    part[ty][tx] = v;
    __syncthreads();
    double total = 0.0;
    if (lane == 0)
      for (int l = 0; l < Shape::kLanes; ++l) total += kPointsLast ? part[l][tx] : part[ty][l];
    return total;
  };

  double s = 0.0;
  if (valid)
    for (int64_t n = lane; n < N; n += Shape::kLanes) s += static_cast<double>(a[n * step]);
  const double sum = lane_total(s);
  if (lane == 0) row_mean[lc] = sum / static_cast<double>(N);
  __syncthreads();  // also: every lane-0 thread is done reading part
  const double m = row_mean[lc];
  double q = 0.0;
  if (valid)
    for (int64_t n = lane; n < N; n += Shape::kLanes) {
      const double d = static_cast<double>(a[n * step]) - m;
      q += d * d;
    }
  const double sq = lane_total(q);
  if (lane == 0 && valid) {
    mean[b * C + c] = m;
    m2[b * C + c] = sq;
  }
}

template <typename T>
void sample_moments(const at::Tensor& acts, bool points_last, at::Tensor& mean, at::Tensor& m2) {
  const int64_t B = acts.size(0), C = acts.size(flow_channel_dim(points_last));
  const int64_t N = acts.size(flow_point_dim(points_last));
  if (B * C == 0) return;
  const int64_t channels = points_last ? MomentsShape<true>::kChannels : MomentsShape<false>::kChannels;
  const int64_t channel_blocks = ceil_div(C, channels);
  TORCH_CHECK(B * channel_blocks <= std::numeric_limits<int32_t>::max(), "flow: too many samples and channels");
  const dim3 grid(static_cast<unsigned int>(B * channel_blocks)), block(kBlockX, kBlockY);
  const cudaStream_t stream = current_stream();
  if (points_last)
    flow_moments_kernel<T, true><<<grid, block, 0, stream>>>(acts.data_ptr<T>(), C, N, channel_blocks,
                                                             mean.data_ptr<double>(), m2.data_ptr<double>());
  else
    flow_moments_kernel<T, false><<<grid, block, 0, stream>>>(acts.data_ptr<T>(), C, N, channel_blocks,
                                                              mean.data_ptr<double>(), m2.data_ptr<double>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

__global__ void flow_count_kernel(const int64_t* __restrict__ labels, int64_t B, int64_t N, int64_t K,
                                  int64_t* __restrict__ count) {
  FLOWAM_GRID_STRIDE_LOOP(k, K) {
    int64_t samples = 0;
    for (int64_t b = 0; b < B; ++b) samples += labels[b] == k;
    count[k] = samples * N;
  }
}

// Class k, channel c: the samples of class k folded in batch order, as on the CPU.
__global__ void flow_class_merge_kernel(const int64_t* __restrict__ labels, const double* __restrict__ s_mean,
                                        const double* __restrict__ s_m2, int64_t B, int64_t C, int64_t N,
                                        int64_t total, double* __restrict__ mean, double* __restrict__ m2) {
  FLOWAM_GRID_STRIDE_LOOP(e, total) {
    const int64_t k = e / C, c = e % C;
    double n_seen = 0.0, mk = 0.0, qk = 0.0;
    for (int64_t b = 0; b < B; ++b) {
      if (labels[b] != k) continue;
      double n_a = n_seen;
      chan_merge(n_a, mk, qk, static_cast<double>(N), s_mean[b * C + c], s_m2[b * C + c]);
      n_seen += static_cast<double>(N);
    }
    mean[e] = mk;
    m2[e] = qk;
  }
}

// One block per sample: std from M2 in place, the channels' terms, and their mean, added in
// channel order by one thread (the CPU's order).
template <typename T>
__global__ void flow_align_loss_kernel(const int64_t* __restrict__ labels, const double* __restrict__ mu,
                                       const double* __restrict__ sigma, const double* __restrict__ mean,
                                       double* __restrict__ std, double* __restrict__ terms, int64_t C, int64_t N,
                                       T* __restrict__ loss) {
  const int64_t b = blockIdx.x;
  const int64_t kc = labels[b] * C;
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x) {
    const int64_t r = b * C + c;
    const double sd = sample_std(std[r], static_cast<double>(N));
    std[r] = sd;
    terms[r] = align_term(mean[r], sd, mu[kc + c], sigma[kc + c]).loss;
  }
  __syncthreads();  // the block's global writes are visible to thread 0 past this point
  if (threadIdx.x == 0) {
    double s = 0.0;
    for (int64_t c = 0; c < C; ++c) s += terms[b * C + c];
    loss[b] = static_cast<T>(s / static_cast<double>(C));
  }
}

// d loss / d a = alpha + beta * (a - m) per (sample, channel) row.
__global__ void flow_align_coef_kernel(const double* __restrict__ g, const int64_t* __restrict__ labels,
                                       const double* __restrict__ mu, const double* __restrict__ sigma,
                                       const double* __restrict__ mean, const double* __restrict__ std, int64_t C,
                                       int64_t N, int64_t total, double* __restrict__ alpha,
                                       double* __restrict__ beta) {
  FLOWAM_GRID_STRIDE_LOOP(r, total) {
    const int64_t b = r / C, kc = labels[b] * C + r % C;
    const AlignGrad k = align_grad(g[b], align_term(mean[r], std[r], mu[kc], sigma[kc]), std[r],
                                   static_cast<double>(N), static_cast<double>(C));
    alpha[r] = k.alpha;
    beta[r] = k.beta;
  }
}

// A block-row is one (sample, channel) row of N points, or, points-last, one point's C
// channels: consecutive threads on consecutive addresses either way, and the index
// arithmetic done once per row.
template <typename T, bool kPointsLast>
__global__ void flow_align_grad_kernel(const T* __restrict__ acts, const double* __restrict__ alpha,
                                       const double* __restrict__ beta, const double* __restrict__ mean, int64_t C,
                                       int64_t N, int64_t rows, T* __restrict__ grad) {
  const int64_t inner = kPointsLast ? C : N;
  for (int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
    const int64_t coef0 = kPointsLast ? (row / N) * C : row;  // coefficient row of element 0
    for (int64_t j = threadIdx.x; j < inner; j += blockDim.x) {
      const int64_t e = row * inner + j, r = kPointsLast ? coef0 + j : coef0;
      grad[e] = static_cast<T>(align_grad_at(alpha[r], beta[r], static_cast<double>(acts[e]), mean[r]));
    }
  }
}

}  // namespace
}  // namespace flowam

flowam::TensorTriple flowam::flow_stats_cuda(const at::Tensor& acts, const at::Tensor& labels,
                                             int64_t num_classes, bool points_last) {
  static constexpr const char* op = "flow_stats_cuda";
  flow_check_acts_labels(acts, labels, num_classes, points_last, c10::DeviceType::CUDA, op);
  const c10::cuda::CUDAGuard guard(acts.device());
  const auto dopts = acts.options().dtype(at::kDouble);
  const int64_t B = acts.size(0), C = acts.size(flow_channel_dim(points_last));
  const int64_t N = acts.size(flow_point_dim(points_last));
  at::Tensor count = at::empty({num_classes}, acts.options().dtype(at::kLong));
  at::Tensor mean = at::empty({num_classes, C}, dopts);
  at::Tensor m2 = at::empty({num_classes, C}, dopts);
  at::Tensor s_mean = at::empty({B, C}, dopts);
  at::Tensor s_m2 = at::empty({B, C}, dopts);
  AT_DISPATCH_FLOATING_TYPES(acts.scalar_type(), op, [&] { sample_moments<scalar_t>(acts, points_last, s_mean, s_m2); });
  const cudaStream_t stream = current_stream();
  const int64_t* lab = labels.data_ptr<int64_t>();
  flow_count_kernel<<<stride_blocks(num_classes, 128), 128, 0, stream>>>(lab, B, N, num_classes,
                                                                         count.data_ptr<int64_t>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  if (mean.numel() > 0) {
    flow_class_merge_kernel<<<stride_blocks(mean.numel(), 256), 256, 0, stream>>>(
        lab, s_mean.data_ptr<double>(), s_m2.data_ptr<double>(), B, C, N, mean.numel(), mean.data_ptr<double>(),
        m2.data_ptr<double>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
  return {count, mean, m2};
}

flowam::TensorTriple flowam::flow_align_forward_cuda(const at::Tensor& acts, const at::Tensor& labels,
                                                     const at::Tensor& mu, const at::Tensor& sigma,
                                                     bool points_last) {
  static constexpr const char* op = "flow_align_forward_cuda";
  flow_check_align_forward(acts, labels, mu, sigma, points_last, c10::DeviceType::CUDA, op);
  const c10::cuda::CUDAGuard guard(acts.device());
  const auto dopts = acts.options().dtype(at::kDouble);
  const int64_t B = acts.size(0), C = acts.size(flow_channel_dim(points_last));
  const int64_t N = acts.size(flow_point_dim(points_last));
  const at::Tensor mu_d = mu.to(at::kDouble).contiguous(), sigma_d = sigma.to(at::kDouble).contiguous();
  at::Tensor loss = at::empty({B}, acts.options());
  at::Tensor mean = at::empty({B, C}, dopts);
  at::Tensor std = at::empty({B, C}, dopts);  // holds M2 until the loss kernel turns it into the std
  if (B == 0) return {loss, mean, std};
  at::Tensor terms = at::empty({B, C}, dopts);
  TORCH_CHECK(B <= ::std::numeric_limits<int32_t>::max(), op, ": too many samples (", B, ")");
  AT_DISPATCH_FLOATING_TYPES(acts.scalar_type(), op, [&] {
    sample_moments<scalar_t>(acts, points_last, mean, std);
    flow_align_loss_kernel<scalar_t><<<static_cast<unsigned int>(B), 256, 0, current_stream()>>>(
        labels.data_ptr<int64_t>(), mu_d.data_ptr<double>(), sigma_d.data_ptr<double>(), mean.data_ptr<double>(),
        std.data_ptr<double>(), terms.data_ptr<double>(), C, N, loss.data_ptr<scalar_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {loss, mean, std};
}

at::Tensor flowam::flow_align_backward_cuda(const at::Tensor& grad_loss, const at::Tensor& acts,
                                            const at::Tensor& labels, const at::Tensor& mu, const at::Tensor& sigma,
                                            const at::Tensor& mean, const at::Tensor& std, bool points_last) {
  static constexpr const char* op = "flow_align_backward_cuda";
  flow_check_align_backward(grad_loss, acts, labels, mu, sigma, mean, std, points_last, c10::DeviceType::CUDA, op);
  const c10::cuda::CUDAGuard guard(acts.device());
  const int64_t B = acts.size(0), C = acts.size(flow_channel_dim(points_last));
  const int64_t N = acts.size(flow_point_dim(points_last));
  const at::Tensor mu_d = mu.to(at::kDouble).contiguous(), sigma_d = sigma.to(at::kDouble).contiguous();
  const at::Tensor g = grad_loss.to(at::kDouble).contiguous();
  at::Tensor grad = at::empty_like(acts);
  if (grad.numel() == 0) return grad;
  at::Tensor alpha = at::empty_like(mean), beta = at::empty_like(mean);
  const cudaStream_t stream = current_stream();
  flow_align_coef_kernel<<<stride_blocks(B * C, 256), 256, 0, stream>>>(
      g.data_ptr<double>(), labels.data_ptr<int64_t>(), mu_d.data_ptr<double>(), sigma_d.data_ptr<double>(),
      mean.data_ptr<double>(), std.data_ptr<double>(), C, N, B * C, alpha.data_ptr<double>(),
      beta.data_ptr<double>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  const int64_t rows = points_last ? B * N : B * C;
  const int64_t inner = points_last ? C : N;
  // `std` names a tensor here, hence ::std.
  const int threads = static_cast<int>(::std::min<int64_t>(256, ceil_div(inner, 32) * 32));
  const unsigned int blocks = static_cast<unsigned int>(::std::min<int64_t>(rows, 1 << 20));
  AT_DISPATCH_FLOATING_TYPES(acts.scalar_type(), op, [&] {
    if (points_last)
      flow_align_grad_kernel<scalar_t, true><<<blocks, threads, 0, stream>>>(
          acts.data_ptr<scalar_t>(), alpha.data_ptr<double>(), beta.data_ptr<double>(), mean.data_ptr<double>(), C,
          N, rows, grad.data_ptr<scalar_t>());
    else
      flow_align_grad_kernel<scalar_t, false><<<blocks, threads, 0, stream>>>(
          acts.data_ptr<scalar_t>(), alpha.data_ptr<double>(), beta.data_ptr<double>(), mean.data_ptr<double>(), C,
          N, rows, grad.data_ptr<scalar_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return grad;
}
