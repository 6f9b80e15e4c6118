// Input checks of quantile_align_forward.
#pragma once
#include <cstdint>

#include "checks.h"

namespace flowam {

// acts (B, C, N), or (B, N, C) when points_last; labels (B) int64 in [0, K); quantiles (K, C, Q),
// each class's quantile functions at Q levels (each row ascending), and inv_scale (K, C), both of
// acts' float dtype; N and Q below 2^31 (indices are int32 in the sort and the level map).
inline void quantile_check_forward(const at::Tensor& acts, const at::Tensor& labels, const at::Tensor& quantiles,
                                   const at::Tensor& inv_scale, bool points_last, c10::DeviceType dev,
                                   const char* op) {
  const auto dt = check_float_dense(acts, "acts", 3, dev, op);
  const int64_t channels = acts.size(points_last ? 2 : 1), points = acts.size(points_last ? 1 : 2);
  check_dense_beside(labels, "labels", 1, acts, "acts", dev, op);
  check_dense_beside(quantiles, "quantiles", 3, acts, "acts", dev, op);
  check_dense_beside(inv_scale, "inv_scale", 2, acts, "acts", dev, op);
  TORCH_CHECK(quantiles.scalar_type() == dt && inv_scale.scalar_type() == dt, op,
              ": quantiles and inv_scale must have acts' dtype ", dt, ", got ", quantiles.scalar_type(), " and ",
              inv_scale.scalar_type());
  TORCH_CHECK(labels.scalar_type() == at::kLong, op, ": labels must be int64, got ", labels.scalar_type());
  TORCH_CHECK(labels.size(0) == acts.size(0), op, ": labels has ", labels.size(0), " entries but acts has ",
              acts.size(0), " samples");
  TORCH_CHECK(quantiles.size(1) == channels, op, ": quantiles must have shape (classes, ", channels,
              ", levels) for acts of shape ", acts.sizes(), ", got ", quantiles.sizes());
  TORCH_CHECK(quantiles.size(0) > 0 && quantiles.size(2) > 0 && quantiles.size(2) < (int64_t(1) << 31), op,
              ": quantiles needs at least one class and one level, and under 2^31 levels, got shape ",
              quantiles.sizes());
  TORCH_CHECK(inv_scale.size(0) == quantiles.size(0) && inv_scale.size(1) == channels, op,
              ": inv_scale must have shape (", quantiles.size(0), ", ", channels, "), got ", inv_scale.sizes());
  TORCH_CHECK(points > 0, op, ": acts has no points (shape ", acts.sizes(), ")");
  TORCH_CHECK(points < (int64_t(1) << 31), op, ": acts has ", points, " points, above 2^31 - 1");
  check_index_range(labels, quantiles.size(0), op, "labels");
}

}  // namespace flowam
