// Per-element pieces of farthest point sampling and the ball query, shared by the CPU loops
// and the CUDA kernels.
//
// Both ops decide by comparing squared distances (the farthest point, a point inside the
// radius), so every backend and the reference must compute them with the same roundings:
//
//     d2 = (dx * dx + dy * dy) + dz * dz,   d = a - b per coordinate, in x, y, z order,
//
// each product and each sum rounded to the point dtype, never fused into an FMA. Fusing
// rounds differently and would let a near tie go another way on one backend. Compilers fuse
// on their own: nvcc by default, GCC with its C++ default -ffp-contract=fast (across
// statements). So device code uses the round-to-nearest intrinsics, which are never fused,
// and the CPU functions that call these helpers carry FLOWAM_NO_FP_CONTRACT; clang fuses only
// within one expression, which the separate statements below rule out. The Triton kernels
// launch with enable_fp_fusion=False, and the reference uses separate torch ops.
#pragma once
#include <cstdint>

#include "hd.h"

#if defined(__GNUC__) && !defined(__clang__) && !defined(__CUDACC__)
#define FLOWAM_NO_FP_CONTRACT __attribute__((optimize("fp-contract=off")))
#else
#define FLOWAM_NO_FP_CONTRACT
#endif

namespace flowam {

FLOWAM_HD float mul_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fmul_rn(a, b);
#else
  return a * b;
#endif
}
FLOWAM_HD double mul_rn(double a, double b) {
#if defined(__CUDA_ARCH__)
  return __dmul_rn(a, b);
#else
  return a * b;
#endif
}
FLOWAM_HD float add_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fadd_rn(a, b);
#else
  return a + b;
#endif
}
FLOWAM_HD double add_rn(double a, double b) {
#if defined(__CUDA_ARCH__)
  return __dadd_rn(a, b);
#else
  return a + b;
#endif
}

// |a - b|^2 of two 3-d points, by the formula above.
template <typename scalar_t>
FLOWAM_HD scalar_t sq_dist3(scalar_t ax, scalar_t ay, scalar_t az, scalar_t bx, scalar_t by, scalar_t bz) {
  const scalar_t dx = ax - bx;
  const scalar_t dy = ay - by;
  const scalar_t dz = az - bz;
  const scalar_t xx = mul_rn(dx, dx);
  const scalar_t yy = mul_rn(dy, dy);
  const scalar_t zz = mul_rn(dz, dz);
  return add_rn(add_rn(xx, yy), zz);
}

// FPS's next point: the largest running min distance, ties to the smaller index. A NaN
// distance (only from a direct call with NaN input) is never taken, so the index stays valid.
template <typename scalar_t, typename index_t>
FLOWAM_HD bool fps_better(scalar_t d1, index_t i1, scalar_t d2, index_t i2) {
  return (d1 > d2) | ((d1 == d2) & (i1 < i2));
}

}  // namespace flowam
