// Input checks of ball_query, one set for the CPU and the CUDA entry points.
#pragma once
#include <cmath>

#include "fps/fps_checks.h"

namespace flowam {

inline void ball_query_check(const at::Tensor& points, const at::Tensor& centroids, double radius, int64_t nsample,
                             c10::DeviceType dev, const char* op) {
  check_points3(points, dev, op, "points");
  check_points3(centroids, dev, op, "centroids");
  check_same_device(points, "points", centroids, "centroids", op);
  TORCH_CHECK(points.scalar_type() == centroids.scalar_type(), op, ": points and centroids dtypes differ (",
              points.scalar_type(), " vs ", centroids.scalar_type(), ")");
  TORCH_CHECK(points.size(0) == centroids.size(0), op, ": batch sizes of points and centroids differ (",
              points.size(0), " vs ", centroids.size(0), ")");
  const int64_t n = points.size(1);
  TORCH_CHECK(n >= 1, op, ": points must hold at least one point per sample");
  TORCH_CHECK(n < std::numeric_limits<int32_t>::max(), op, ": too many points (", n, ")");
  TORCH_CHECK(std::isfinite(radius) && radius > 0, op, ": radius must be positive and finite, got ", radius);
  TORCH_CHECK(nsample >= 1 && nsample < std::numeric_limits<int32_t>::max(), op,
              ": nsample must be at least 1, got nsample=", nsample);
}

}  // namespace flowam
