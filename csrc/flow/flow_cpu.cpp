// Activation-flow ops on the CPU: per-class statistics over points (flow_stats) and the
// per-sample alignment loss with its gradient (flow_align). acts is (B, C, N), so each
// (sample, channel) row of N points is contiguous: one row is read from memory once and its
// second pass (the deviations) runs from L1. Both ops also read (B, N, C) (points_last), the
// layout the fast paths produce, so their activations need no transposing copy in either
// direction. Every reduction runs in a fixed order, so results are bit-identical from run to
// run and independent of the thread count.
// Per-operator headers: <ATen/ATen.h> declares every ATen op and was most of the build time.
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "flow/flow_checks.h"
#include "flow/flow_math.h"
#include "ops.h"

namespace flowam {
namespace {

// Mean and M2 (sum of squared deviations) of one row, in double, by two passes: exact to
// rounding even when the mean dwarfs the spread, unlike sum and sum of squares.
template <typename T>
void row_moments(const T* a, int64_t n, double& mean, double& m2) {
  double s = 0.0;
#pragma omp simd reduction(+ : s)
  for (int64_t i = 0; i < n; ++i) s += static_cast<double>(a[i]);
  const double m = s / static_cast<double>(n);
  double q = 0.0;
#pragma omp simd reduction(+ : q)
  for (int64_t i = 0; i < n; ++i) {
    const double d = static_cast<double>(a[i]) - m;
    q += d * d;
  }
  mean = m;
  m2 = q;
}

// Points-last (B, N, C): per-channel mean and M2 of one sample's (N, C) block, by the same two
// passes, reading it point by point so the channel loop is contiguous and vectorizes. The
// block of a sample (N * C values) stays in L2 between the passes at the sizes FlowAM uses.
template <typename T>
void block_moments(const T* a, int64_t n, int64_t c, double* mean, double* m2) {
  std::fill(mean, mean + c, 0.0);
  std::fill(m2, m2 + c, 0.0);
  for (int64_t i = 0; i < n; ++i) {
    const T* p = a + i * c;
#pragma omp simd
    for (int64_t j = 0; j < c; ++j) mean[j] += static_cast<double>(p[j]);
  }
  const double inv_n = 1.0 / static_cast<double>(n);
  for (int64_t j = 0; j < c; ++j) mean[j] *= inv_n;
  for (int64_t i = 0; i < n; ++i) {
    const T* p = a + i * c;
#pragma omp simd
    for (int64_t j = 0; j < c; ++j) {
      const double d = static_cast<double>(p[j]) - mean[j];
      m2[j] += d * d;
    }
  }
}

// Rows per parallel task: enough points (~2^16) that a task outweighs waking the thread pool,
// so small calls run inline.
int64_t row_grain(int64_t n) { return std::max<int64_t>(1, (int64_t(1) << 16) / std::max<int64_t>(n, 1)); }

// Per-(sample, channel) mean and M2 over the points into (B, C) arrays, in either layout.
template <typename T>
void sample_moments(const T* a, int64_t B, int64_t C, int64_t N, bool points_last, double* mean, double* m2) {
  if (points_last) {
    at::parallel_for(0, B, row_grain(N * C), [&](int64_t begin, int64_t end) {
      for (int64_t b = begin; b < end; ++b) block_moments(a + b * N * C, N, C, mean + b * C, m2 + b * C);
    });
  } else {
    at::parallel_for(0, B * C, row_grain(N), [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r) row_moments(a + r * N, N, mean[r], m2[r]);
    });
  }
}

template <typename T>
void stats_impl(const at::Tensor& acts, const at::Tensor& labels, int64_t num_classes, at::Tensor& count,
                at::Tensor& mean, at::Tensor& m2, bool points_last) {
  const int64_t B = acts.size(0), C = acts.size(flow_channel_dim(points_last));
  const int64_t N = acts.size(flow_point_dim(points_last));
  const int64_t* lab = labels.data_ptr<int64_t>();
  at::Tensor s_mean = at::empty({B, C}, acts.options().dtype(at::kDouble));
  at::Tensor s_m2 = at::empty({B, C}, acts.options().dtype(at::kDouble));
  double* smp = s_mean.data_ptr<double>();
  double* sqp = s_m2.data_ptr<double>();
  sample_moments(acts.data_ptr<T>(), B, C, N, points_last, smp, sqp);

  int64_t* cnt = count.data_ptr<int64_t>();
  double* mp = mean.data_ptr<double>();
  double* qp = m2.data_ptr<double>();
  std::fill(cnt, cnt + num_classes, int64_t(0));
  for (int64_t b = 0; b < B; ++b) cnt[lab[b]] += N;
  // Each class folds its samples in batch order; classes are independent, so they split
  // across threads without changing any result.
  at::parallel_for(0, num_classes, row_grain(B * C), [&](int64_t begin, int64_t end) {
    for (int64_t k = begin; k < end; ++k) {
      double* mk = mp + k * C;
      double* qk = qp + k * C;
      std::fill(mk, mk + C, 0.0);
      std::fill(qk, qk + C, 0.0);
      double n_seen = 0.0;
      for (int64_t b = 0; b < B; ++b) {
        if (lab[b] != k) continue;
        const double* sm = smp + b * C;
        const double* sq = sqp + b * C;
#pragma omp simd
        for (int64_t c = 0; c < C; ++c) {
          double n_a = n_seen;
          chan_merge(n_a, mk[c], qk[c], static_cast<double>(N), sm[c], sq[c]);
        }
        n_seen += static_cast<double>(N);
      }
    }
  });
}

template <typename T>
void align_forward_impl(const at::Tensor& acts, const at::Tensor& labels, const at::Tensor& mu,
                        const at::Tensor& sigma, at::Tensor& loss, at::Tensor& mean, at::Tensor& std,
                        bool points_last) {
  const int64_t B = acts.size(0), C = acts.size(flow_channel_dim(points_last));
  const int64_t N = acts.size(flow_point_dim(points_last));
  const T* a = acts.data_ptr<T>();
  const int64_t* lab = labels.data_ptr<int64_t>();
  const double* mup = mu.data_ptr<double>();
  const double* sgp = sigma.data_ptr<double>();
  double* mp = mean.data_ptr<double>();
  double* sp = std.data_ptr<double>();
  at::Tensor terms = at::empty({B, C}, mean.options());
  double* tp = terms.data_ptr<double>();
  // std holds M2 until the terms below turn it into the std.
  sample_moments(a, B, C, N, points_last, mp, sp);
  for (int64_t r = 0; r < B * C; ++r) {
    const int64_t kc = lab[r / C] * C + r % C;
    sp[r] = sample_std(sp[r], static_cast<double>(N));
    tp[r] = align_term(mp[r], sp[r], mup[kc], sgp[kc]).loss;
  }
  T* lp = loss.data_ptr<T>();
  for (int64_t b = 0; b < B; ++b) {
    double s = 0.0;
    for (int64_t c = 0; c < C; ++c) s += tp[b * C + c];
    lp[b] = static_cast<T>(s / static_cast<double>(C));
  }
}

template <typename T>
void align_backward_impl(const at::Tensor& grad_loss, const at::Tensor& acts, const at::Tensor& labels,
                         const at::Tensor& mu, const at::Tensor& sigma, const at::Tensor& mean,
                         const at::Tensor& std, at::Tensor& grad, bool points_last) {
  const int64_t B = acts.size(0), C = acts.size(flow_channel_dim(points_last));
  const int64_t N = acts.size(flow_point_dim(points_last));
  const T* a = acts.data_ptr<T>();
  T* ga = grad.data_ptr<T>();
  const double* g = grad_loss.data_ptr<double>();
  const int64_t* lab = labels.data_ptr<int64_t>();
  const double* mup = mu.data_ptr<double>();
  const double* sgp = sigma.data_ptr<double>();
  const double* mp = mean.data_ptr<double>();
  const double* sp = std.data_ptr<double>();
  // d loss / d a = alpha + beta * (a - m) per (sample, channel) row r.
  auto coefficients = [&](int64_t r) {
    const int64_t kc = lab[r / C] * C + r % C;
    return align_grad(g[r / C], align_term(mp[r], sp[r], mup[kc], sgp[kc]), sp[r], static_cast<double>(N),
                      static_cast<double>(C));
  };
  if (points_last) {
    at::parallel_for(0, B, row_grain(N * C), [&](int64_t begin, int64_t end) {
      std::vector<double> alpha(C), beta(C);
      for (int64_t b = begin; b < end; ++b) {
        for (int64_t c = 0; c < C; ++c) {
          const AlignGrad k = coefficients(b * C + c);
          alpha[c] = k.alpha;
          beta[c] = k.beta;
        }
        const double* m = mp + b * C;
        for (int64_t i = 0; i < N; ++i) {
          const T* ap = a + (b * N + i) * C;
          T* gp = ga + (b * N + i) * C;
#pragma omp simd
          for (int64_t c = 0; c < C; ++c)
            gp[c] = static_cast<T>(align_grad_at(alpha[c], beta[c], static_cast<double>(ap[c]), m[c]));
        }
      }
    });
    return;
  }
  at::parallel_for(0, B * C, row_grain(N), [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const AlignGrad k = coefficients(r);
      const double m = mp[r];
      const T* ar = a + r * N;
      T* gr = ga + r * N;
#pragma omp simd
      for (int64_t i = 0; i < N; ++i)
        gr[i] = static_cast<T>(align_grad_at(k.alpha, k.beta, static_cast<double>(ar[i]), m));
    }
  });
}

}  // namespace

TensorTriple flow_stats_cpu(const at::Tensor& acts, const at::Tensor& labels, int64_t num_classes,
                            bool points_last) {
  static constexpr const char* op = "flow_stats_cpu";
  flow_check_acts_labels(acts, labels, num_classes, points_last, c10::DeviceType::CPU, op);
  const auto dopts = acts.options().dtype(at::kDouble);
  const int64_t C = acts.size(flow_channel_dim(points_last));
  at::Tensor count = at::empty({num_classes}, acts.options().dtype(at::kLong));
  at::Tensor mean = at::empty({num_classes, C}, dopts);
  at::Tensor m2 = at::empty({num_classes, C}, dopts);
  AT_DISPATCH_FLOATING_TYPES(acts.scalar_type(), op,
                             [&] { stats_impl<scalar_t>(acts, labels, num_classes, count, mean, m2, points_last); });
  return {count, mean, m2};
}

TensorTriple flow_align_forward_cpu(const at::Tensor& acts, const at::Tensor& labels,
                                    const at::Tensor& mu, const at::Tensor& sigma, bool points_last) {
  static constexpr const char* op = "flow_align_forward_cpu";
  flow_check_align_forward(acts, labels, mu, sigma, points_last, c10::DeviceType::CPU, op);
  const auto dopts = acts.options().dtype(at::kDouble);
  const int64_t C = acts.size(flow_channel_dim(points_last));
  at::Tensor mu_d = mu.to(at::kDouble).contiguous(), sigma_d = sigma.to(at::kDouble).contiguous();
  at::Tensor loss = at::empty({acts.size(0)}, acts.options());
  at::Tensor mean = at::empty({acts.size(0), C}, dopts);
  at::Tensor std = at::empty({acts.size(0), C}, dopts);
  AT_DISPATCH_FLOATING_TYPES(acts.scalar_type(), op, [&] {
    align_forward_impl<scalar_t>(acts, labels, mu_d, sigma_d, loss, mean, std, points_last);
  });
  return {loss, mean, std};
}

at::Tensor flow_align_backward_cpu(const at::Tensor& grad_loss, const at::Tensor& acts, const at::Tensor& labels,
                                   const at::Tensor& mu, const at::Tensor& sigma, const at::Tensor& mean,
                                   const at::Tensor& std, bool points_last) {
  static constexpr const char* op = "flow_align_backward_cpu";
  flow_check_align_backward(grad_loss, acts, labels, mu, sigma, mean, std, points_last, c10::DeviceType::CPU, op);
  at::Tensor mu_d = mu.to(at::kDouble).contiguous(), sigma_d = sigma.to(at::kDouble).contiguous();
  at::Tensor g = grad_loss.to(at::kDouble).contiguous();
  at::Tensor grad = at::empty_like(acts);
  AT_DISPATCH_FLOATING_TYPES(acts.scalar_type(), op, [&] {
    align_backward_impl<scalar_t>(g, acts, labels, mu_d, sigma_d, mean, std, grad, points_last);
  });
  return grad;
}

}  // namespace flowam
