// Input checks of edge_max_forward / edge_max_backward, one set for the CPU and the CUDA entry
// points.
#pragma once
#include "checks.h"

namespace flowam {

inline void edge_max_check_forward(const at::Tensor& feat, const at::Tensor& idx, c10::DeviceType dev,
                                   const char* op) {
  TORCH_CHECK(feat.defined() && idx.defined(), op, ": undefined input");
  TORCH_CHECK(feat.device().type() == dev && idx.device().type() == dev, op, ": feat and idx must be ",
              device_label(dev), " tensors, got ", feat.device(), " and ", idx.device());
  check_same_device(feat, "feat", idx, "idx", op);
  TORCH_CHECK(feat.dim() == 3, op, ": feat must have 3 dimensions (B, N, C), got shape ", feat.sizes());
  TORCH_CHECK(idx.dim() == 3, op, ": idx must have 3 dimensions (B, M, k), got shape ", idx.sizes());
  TORCH_CHECK(is_float_or_double(feat.scalar_type()), op, ": feat must be float32 or float64, got ",
              feat.scalar_type());
  TORCH_CHECK(idx.scalar_type() == at::kLong || idx.scalar_type() == at::kInt, op,
              ": idx must be int64 or int32, got ", idx.scalar_type());
  TORCH_CHECK(feat.is_contiguous() && idx.is_contiguous(), op, ": feat and idx must be contiguous");
  TORCH_CHECK(idx.size(0) == feat.size(0), op, ": batch sizes of feat and idx differ (", feat.size(0), " vs ",
              idx.size(0), ")");
  TORCH_CHECK(idx.size(2) >= 1, op, ": idx needs at least one neighbour per point (k >= 1), got shape ",
              idx.sizes());
  check_index_range(idx, feat.size(1), op, "idx");
}

inline void edge_max_check_backward(const at::Tensor& grad_out, const at::Tensor& argmax, int64_t num_points,
                                    c10::DeviceType dev, const char* op) {
  TORCH_CHECK(grad_out.defined() && argmax.defined(), op, ": undefined input");
  TORCH_CHECK(grad_out.device().type() == dev && argmax.device().type() == dev, op, ": inputs must be ",
              device_label(dev), " tensors, got ", grad_out.device(), " and ", argmax.device());
  check_same_device(grad_out, "grad_out", argmax, "argmax", op);
  TORCH_CHECK(grad_out.dim() == 3, op, ": grad_out must have 3 dimensions (B, M, C), got shape ", grad_out.sizes());
  TORCH_CHECK(is_float_or_double(grad_out.scalar_type()), op, ": grad_out must be float32 or float64, got ",
              grad_out.scalar_type());
  TORCH_CHECK(argmax.scalar_type() == at::kLong, op, ": argmax must be int64, got ", argmax.scalar_type());
  TORCH_CHECK(argmax.sizes() == grad_out.sizes(), op, ": argmax shape ", argmax.sizes(),
              " differs from grad_out shape ", grad_out.sizes());
  TORCH_CHECK(grad_out.is_contiguous() && argmax.is_contiguous(), op, ": grad_out and argmax must be contiguous");
  TORCH_CHECK(num_points >= 1, op, ": num_points must be >= 1, got ", num_points);
  check_index_range(argmax, num_points, op, "argmax");
}

}  // namespace flowam
