// Input checks of group_gather_forward / group_gather_backward, one set for the CPU and the
// CUDA entry points.
#pragma once
#include <cstdint>

#include "checks.h"

namespace flowam {

// idx (B, S, K), int32 or int64, contiguous, beside `ref`, values in [0, num_points).
inline void group_gather_check_idx(const at::Tensor& idx, const at::Tensor& ref, const char* ref_name,
                                   int64_t num_points, c10::DeviceType dev, const char* op) {
  check_dense_beside(idx, "idx", 3, ref, ref_name, dev, op);
  TORCH_CHECK(idx.scalar_type() == at::kLong || idx.scalar_type() == at::kInt, op,
              ": idx must be int64 or int32, got ", idx.scalar_type());
  TORCH_CHECK(idx.size(2) >= 1, op, ": idx needs at least one neighbour per group (K >= 1), got shape ",
              idx.sizes());
  check_index_range(idx, num_points, op, "idx");
}

// scale (C) and shift (C) of `dt`, beside `ref`.
inline void group_gather_check_channels(const at::Tensor& t, const char* name, int64_t C, at::ScalarType dt,
                                        const at::Tensor& ref, const char* ref_name, c10::DeviceType dev,
                                        const char* op) {
  check_dense_beside(t, name, 1, ref, ref_name, dev, op);
  TORCH_CHECK(t.scalar_type() == dt, op, ": ", name, " must have dtype ", dt, ", got ", t.scalar_type());
  TORCH_CHECK(t.size(0) == C, op, ": ", name, " must have C = ", C, " entries, got ", t.size(0));
}

inline void group_gather_check_forward(const at::Tensor& P, const at::Tensor& Q, const at::Tensor& idx,
                                       const at::Tensor& scale, const at::Tensor& shift, c10::DeviceType dev,
                                       const char* op) {
  const auto dt = check_float_dense(P, "P", 3, dev, op);
  check_dense_beside(Q, "Q", 3, P, "P", dev, op);
  TORCH_CHECK(Q.scalar_type() == dt, op, ": Q must have the dtype of P (", dt, "), got ", Q.scalar_type());
  const int64_t B = P.size(0), N = P.size(1), C = P.size(2);
  TORCH_CHECK(Q.size(0) == B && Q.size(2) == C, op, ": Q must have shape (B, S, C) with P's B = ", B, " and C = ",
              C, ", got ", Q.sizes());
  TORCH_CHECK(idx.dim() == 3 && idx.size(0) == B && idx.size(1) == Q.size(1), op,
              ": idx must have shape (B, S, K) with B = ", B, " and S = ", Q.size(1), " (Q's), got ", idx.sizes());
  group_gather_check_idx(idx, P, "P", N, dev, op);
  group_gather_check_channels(scale, "scale", C, dt, P, "P", dev, op);
  group_gather_check_channels(shift, "shift", C, dt, P, "P", dev, op);
}

inline void group_gather_check_backward(const at::Tensor& grad_out, const at::Tensor& out, const at::Tensor& idx,
                                        const at::Tensor& scale, int64_t num_points, c10::DeviceType dev,
                                        const char* op) {
  const auto dt = check_float_dense(grad_out, "grad_out", 4, dev, op);
  check_dense_beside(out, "out", 4, grad_out, "grad_out", dev, op);
  TORCH_CHECK(out.scalar_type() == dt, op, ": out must have the dtype of grad_out (", dt, "), got ",
              out.scalar_type());
  TORCH_CHECK(out.sizes() == grad_out.sizes(), op, ": out shape ", out.sizes(), " differs from grad_out shape ",
              grad_out.sizes());
  TORCH_CHECK(num_points >= 1, op, ": num_points must be >= 1, got ", num_points);
  TORCH_CHECK(idx.dim() == 3 && idx.sizes() == grad_out.sizes().slice(0, 3), op,
              ": idx must have grad_out's leading shape (B, S, K) = ", grad_out.sizes().slice(0, 3), ", got ",
              idx.sizes());
  group_gather_check_idx(idx, grad_out, "grad_out", num_points, dev, op);
  group_gather_check_channels(scale, "scale", grad_out.size(3), dt, grad_out, "grad_out", dev, op);
}

}  // namespace flowam
