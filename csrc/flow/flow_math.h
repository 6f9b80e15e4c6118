// Per-element arithmetic of the activation-flow ops (flow_stats, flow_align), shared by the
// C++ CPU loops and the CUDA kernels. Everything is in double: the statistics are sums over
// up to millions of points, and the alignment's gradient divides by per-channel scales.
#pragma once
#include <cmath>

#include "hd.h"

namespace flowam {

// Mirrors of flowam_fast.ops.reference.STD_EPS and SCALE_EPS (the tests compare against the
// reference on constant channels, where a drift between the two would show).
constexpr double kStdEps = 1e-8;
constexpr double kScaleEps = 1e-3;

// Chan et al.'s parallel update: fold partial statistics (n_b, mean_b, m2_b) into
// (n_a, mean_a, m2_a), where m2 is the sum of squared deviations from the mean. Exact in exact
// arithmetic and stable in floating point, unlike merging sums of squares.
FLOWAM_HD void chan_merge(double& n_a, double& mean_a, double& m2_a, double n_b, double mean_b,
                          double m2_b) {
  const double n = n_a + n_b;
  if (n_b == 0.0) return;
  const double delta = mean_b - mean_a;
  const double w_b = n_b / n;
  mean_a += delta * w_b;
  m2_a += m2_b + delta * delta * n_a * w_b;
  n_a = n;
}

// Population std over the points of one sample, with STD_EPS inside the square root so a
// constant channel (a dead ReLU) keeps a finite std and gradient.
FLOWAM_HD double sample_std(double m2, double n) { return sqrt(m2 / n + kStdEps); }

// One channel's alignment term ((m - mu)/s)^2 + ((sd - sigma)/s)^2, s = sigma + SCALE_EPS,
// and its partial derivatives with respect to m and sd.
struct AlignTerm {
  double loss, d_mean, d_std;
};

FLOWAM_HD AlignTerm align_term(double m, double sd, double mu, double sigma) {
  const double inv_s = 1.0 / (sigma + kScaleEps);
  const double em = (m - mu) * inv_s, es = (sd - sigma) * inv_s;
  return {em * em + es * es, 2.0 * em * inv_s, 2.0 * es * inv_s};
}

// The gradient of (upstream g) * (mean over `channels` of the term) with respect to a point's
// activation a is alpha + beta * (a - m): d m / d a = 1/n, d sd / d a = (a - m) / (n * sd).
struct AlignGrad {
  double alpha, beta;
};

FLOWAM_HD AlignGrad align_grad(double g, const AlignTerm& t, double sd, double n, double channels) {
  const double gc = g / (channels * n);
  return {gc * t.d_mean, gc * t.d_std / sd};
}

// The gradient at one point's activation a, from its row's coefficients and mean m.
FLOWAM_HD double align_grad_at(double alpha, double beta, double a, double m) { return alpha + beta * (a - m); }

}  // namespace flowam
