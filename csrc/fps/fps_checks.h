// Input checks of farthest_point_sample, one set for the CPU and the CUDA entry points, and
// the (B, N, 3) point check that the ball query shares.
#pragma once
#include <cstdint>
#include <limits>

#include "checks.h"

namespace flowam {

inline void check_points3(const at::Tensor& t, c10::DeviceType dev, const char* op, const char* name) {
  check_device(t, dev, op, name);
  TORCH_CHECK(t.dim() == 3 && t.size(2) == 3, op, ": ", name, " must have shape (B, N, 3), got ", t.sizes());
  TORCH_CHECK(is_float_or_double(t.scalar_type()), op, ": ", name, " must be float32 or float64, got ",
              t.scalar_type());
  TORCH_CHECK(t.is_contiguous(), op, ": ", name, " must be contiguous");
}

inline void fps_check(const at::Tensor& points, int64_t num_samples, c10::DeviceType dev, const char* op) {
  check_points3(points, dev, op, "points");
  const int64_t n = points.size(1);
  TORCH_CHECK(n < std::numeric_limits<int32_t>::max(), op, ": too many points (", n, ")");
  TORCH_CHECK(num_samples >= 1 && num_samples <= n, op, ": num_samples must be in [1, ", n,
              "] (number of points), got num_samples=", num_samples);
}

}  // namespace flowam
