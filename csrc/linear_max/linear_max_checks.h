// Input checks of linear_max_forward / linear_max_backward, one set for the CPU and the CUDA
// entry points.
#pragma once
#include <cmath>
#include <cstdint>
#include <limits>

#include "checks.h"

namespace flowam {

// Shapes, dtypes, devices and layout shared by the forward and the backward.
inline void linear_max_check_inputs(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& scale,
                                    const at::Tensor& shift, double negative_slope, c10::DeviceType dev,
                                    const char* op) {
  const auto dt = check_float_dense(x, "x", 3, dev, op);
  check_dense_beside(weight, "weight", 2, x, "x", dev, op);
  check_dense_beside(scale, "scale", 1, x, "x", dev, op);
  check_dense_beside(shift, "shift", 1, x, "x", dev, op);
  TORCH_CHECK(weight.scalar_type() == dt && scale.scalar_type() == dt && shift.scalar_type() == dt, op,
              ": weight, scale and shift must have the dtype of x (", dt, "), got ", weight.scalar_type(), ", ",
              scale.scalar_type(), ", ", shift.scalar_type());
  TORCH_CHECK(x.size(1) > 0, op, ": x has no points (shape ", x.sizes(), ")");
  // Point indices travel as int32 inside the kernels.
  TORCH_CHECK(x.size(1) <= std::numeric_limits<int32_t>::max(), op, ": too many points (", x.size(1), ")");
  TORCH_CHECK(weight.size(1) == x.size(2), op, ": weight has ", weight.size(1), " input channels but x has ",
              x.size(2));
  TORCH_CHECK(scale.size(0) == weight.size(0) && shift.size(0) == weight.size(0), op,
              ": scale and shift must have weight.size(0) = ", weight.size(0), " entries, got ", scale.size(0),
              " and ", shift.size(0));
  TORCH_CHECK(std::isfinite(negative_slope), op, ": negative_slope must be finite, got ", negative_slope);
}

inline void linear_max_check_backward(const at::Tensor& grad_out, const at::Tensor& x, const at::Tensor& weight,
                                      const at::Tensor& scale, const at::Tensor& shift, const at::Tensor& argmax,
                                      double negative_slope, c10::DeviceType dev, const char* op) {
  linear_max_check_inputs(x, weight, scale, shift, negative_slope, dev, op);
  check_dense(grad_out, "grad_out", 2, dev, op);
  check_dense(argmax, "argmax", 2, dev, op);
  check_same_device(grad_out, "grad_out", x, "x", op);
  check_same_device(argmax, "argmax", x, "x", op);
  const int64_t B = x.size(0), N = x.size(1), cout = weight.size(0);
  TORCH_CHECK(grad_out.scalar_type() == x.scalar_type(), op, ": grad_out must have the dtype of x (",
              x.scalar_type(), "), got ", grad_out.scalar_type());
  TORCH_CHECK(argmax.scalar_type() == at::kLong, op, ": argmax must be int64, got ", argmax.scalar_type());
  TORCH_CHECK(grad_out.size(0) == B && grad_out.size(1) == cout, op, ": grad_out must have shape (", B, ", ",
              cout, "), got ", grad_out.sizes());
  TORCH_CHECK(argmax.size(0) == B && argmax.size(1) == cout, op, ": argmax must have shape (", B, ", ", cout,
              "), got ", argmax.sizes());
  check_index_range(argmax, N, op, "argmax");
}

}  // namespace flowam
