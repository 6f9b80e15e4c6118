// Input checks shared by every entry point, CPU and CUDA alike. The kernels trust what these
// establish (device, rank, dtype, layout, index ranges), so a direct call from Python gets an
// error instead of a crash, and both backends of an op refuse the same inputs with the same
// messages: each op's *_checks.h takes the device kind as a parameter.
#pragma once
#include <ATen/core/Tensor.h>
#include <ATen/ops/aminmax.h>

#include <cstdint>

namespace flowam {

// The name a device kind goes by in the error messages ("must be a CUDA tensor").
inline const char* device_label(c10::DeviceType type) { return type == c10::DeviceType::CUDA ? "CUDA" : "CPU"; }

inline void check_device(const at::Tensor& t, c10::DeviceType type, const char* op, const char* name) {
  TORCH_CHECK(t.defined(), op, ": ", name, " is undefined");
  TORCH_CHECK(t.device().type() == type, op, ": ", name, " must be a ", device_label(type), " tensor, got ",
              t.device());
}

// Defined, on `type`, of rank `dim` and contiguous.
inline void check_dense(const at::Tensor& t, const char* name, int64_t dim, c10::DeviceType type, const char* op) {
  check_device(t, type, op, name);
  TORCH_CHECK(t.dim() == dim, op, ": ", name, " must have ", dim, " dimensions, got shape ", t.sizes());
  TORCH_CHECK(t.is_contiguous(), op, ": ", name, " must be contiguous");
}

// A kernel dereferences every pointer on the one device it launches on; CPU tensors all share one.
inline void check_same_device(const at::Tensor& a, const char* name_a, const at::Tensor& b, const char* name_b,
                              const char* op) {
  TORCH_CHECK(a.device() == b.device(), op, ": ", name_a, " and ", name_b, " are on different devices (",
              a.device(), " vs ", b.device(), ")");
}

// check_dense, and float32 or float64; returns the dtype, which the other inputs must share.
inline at::ScalarType check_float_dense(const at::Tensor& t, const char* name, int64_t dim, c10::DeviceType type,
                                        const char* op) {
  check_dense(t, name, dim, type, op);
  const auto dt = t.scalar_type();
  TORCH_CHECK(dt == at::kFloat || dt == at::kDouble, op, ": ", name, " must be float32 or float64, got ", dt);
  return dt;
}

// check_dense, and on the device of `ref` (the tensor a kernel launches beside).
inline void check_dense_beside(const at::Tensor& t, const char* name, int64_t dim, const at::Tensor& ref,
                               const char* ref_name, c10::DeviceType type, const char* op) {
  check_dense(t, name, dim, type, op);
  check_same_device(t, name, ref, ref_name, op);
}

// Every value of an integer tensor in [0, upper). One reduction; on a GPU it waits for the
// device, the price of refusing an index that would read out of bounds.
inline void check_index_range(const at::Tensor& t, int64_t upper, const char* op, const char* name) {
  if (t.numel() == 0) return;
  auto [lo, hi] = at::aminmax(t);
  const int64_t mn = lo.item<int64_t>(), mx = hi.item<int64_t>();
  TORCH_CHECK(mn >= 0 && mx < upper, op, ": ", name, " has values outside [0, ", upper, "): min ", mn, ", max ",
              mx);
}

inline bool is_float_or_double(at::ScalarType t) { return t == at::kFloat || t == at::kDouble; }

}  // namespace flowam
