// Per-element arithmetic of group_gather, shared by the CPU loops and the CUDA kernels. The
// backward's terms are exact copies of the upstream gradient (or 0), so sums taken in one
// order agree bit for bit across the two.
#pragma once
#include "hd.h"

namespace flowam {

// One output element: the folded BatchNorm affine map of the first shared layer's P_j - Q_i,
// then ReLU.
template <typename T>
FLOWAM_HD T group_gather_value(T p, T q, T scale, T shift) {
  const T z = scale * (p - q) + shift;
  return z > T(0) ? z : T(0);
}

// The gradient that reaches (P_j - Q_i) * scale through the ReLU, read off the output: out > 0
// exactly where the pre-activation is > 0, and at 0 the derivative is 0, as in torch's relu.
// Kept for the backward instead of the pre-activation, so nothing but the output is saved.
template <typename T>
FLOWAM_HD T group_gather_grad_term(T grad_out, T out) {
  return out > T(0) ? grad_out : T(0);
}

}  // namespace flowam
