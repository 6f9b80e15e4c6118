// Per-element arithmetic of linear_max (linear + affine + LeakyReLU + max over points), shared
// by the C++ CPU loops and the CUDA kernels. The templates are written with plain operators
// and selects so that T may also be a GCC vector type (the CPU micro-kernel runs them on whole
// SIMD registers); on scalars they are ordinary branch-free inlines.
#pragma once
#include "hd.h"

namespace flowam {

// LeakyReLU(z) = z for z > 0, slope * z otherwise (slope 0: ReLU, slope 1: identity).
template <typename T, typename S>
FLOWAM_HD T leaky_relu(T z, S slope) {
  return z > 0 ? z : z * slope;
}

// d LeakyReLU / dz. At z == 0 it is `slope`, the convention of torch's leaky_relu (and relu)
// autograd, so the fused backward matches the reference exactly at the kink.
template <typename T>
FLOWAM_HD T leaky_relu_grad(T z, T slope) {
  return z > T(0) ? T(1) : slope;
}

// The pre-activation of one channel: the folded BatchNorm affine map of W·x.
template <typename T>
FLOWAM_HD T affine(T wx, T scale, T shift) {
  return wx * scale + shift;
}

// Running max with its argument. Points arrive in increasing index order and only a strictly
// larger value replaces the incumbent, so ties keep the smallest point index.
template <typename T, typename I>
FLOWAM_HD void running_max(T value, I index, T& best, I& best_index) {
  auto greater = value > best;
  best = greater ? value : best;
  best_index = greater ? index : best_index;
}

// The backward's gradient at a channel's argmax point with respect to its pre-activation
// z = affine(wx), for upstream gradient g: d = g * act'(z). The gradients to x and W are then
// d * scale * W and d * scale * x, to scale d * wx and to shift d.
template <typename T>
FLOWAM_HD T linear_max_dz(T g, T wx, T scale, T shift, T slope) {
  return g * leaky_relu_grad(affine(wx, scale, shift), slope);
}

}  // namespace flowam
