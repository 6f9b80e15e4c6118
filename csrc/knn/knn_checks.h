// Input checks of knn_forward / knn_backward, one set for the CPU and the CUDA entry points.
#pragma once
#include "checks.h"

namespace flowam {

inline void knn_check_points(const at::Tensor& t, c10::DeviceType dev, const char* op, const char* name) {
  check_device(t, dev, op, name);
  TORCH_CHECK(t.dim() == 3, op, ": ", name, " must have 3 dimensions (B, N, D), got shape ", t.sizes());
  TORCH_CHECK(is_float_or_double(t.scalar_type()), op, ": ", name, " must be float32 or float64, got ",
              t.scalar_type());
  TORCH_CHECK(t.is_contiguous(), op, ": ", name, " must be contiguous");
}

inline void knn_check_pair(const at::Tensor& query, const at::Tensor& ref, c10::DeviceType dev, const char* op) {
  knn_check_points(query, dev, op, "query");
  knn_check_points(ref, dev, op, "ref");
  check_same_device(query, "query", ref, "ref", op);
  TORCH_CHECK(query.scalar_type() == ref.scalar_type(), op, ": query and ref dtypes differ (", query.scalar_type(),
              " vs ", ref.scalar_type(), ")");
  TORCH_CHECK(query.size(0) == ref.size(0), op, ": batch sizes of query and ref differ (", query.size(0), " vs ",
              ref.size(0), ")");
  TORCH_CHECK(query.size(2) == ref.size(2), op, ": point dimensions of query and ref differ (", query.size(2),
              " vs ", ref.size(2), ")");
  TORCH_CHECK(query.size(2) >= 1, op, ": points need at least one coordinate");
}

inline void knn_check_forward(const at::Tensor& query, const at::Tensor& ref, int64_t k, c10::DeviceType dev,
                              const char* op) {
  knn_check_pair(query, ref, dev, op);
  const int64_t n = ref.size(1);
  TORCH_CHECK(k >= 1 && k <= n, op, ": k must be in [1, ", n, "] (number of reference points), got k=", k);
}

inline void knn_check_backward(const at::Tensor& grad_dist2, const at::Tensor& query, const at::Tensor& ref,
                               const at::Tensor& idx, c10::DeviceType dev, const char* op) {
  knn_check_pair(query, ref, dev, op);
  knn_check_points(grad_dist2, dev, op, "grad_dist2");
  check_same_device(grad_dist2, "grad_dist2", query, "query", op);
  TORCH_CHECK(grad_dist2.scalar_type() == query.scalar_type(), op, ": grad_dist2 dtype ", grad_dist2.scalar_type(),
              " differs from query dtype ", query.scalar_type());
  check_device(idx, dev, op, "idx");
  check_same_device(idx, "idx", query, "query", op);
  TORCH_CHECK(idx.scalar_type() == at::kLong, op, ": idx must be int64, got ", idx.scalar_type());
  TORCH_CHECK(idx.is_contiguous(), op, ": idx must be contiguous");
  const int64_t B = query.size(0), M = query.size(1);
  TORCH_CHECK(idx.dim() == 3 && idx.size(0) == B && idx.size(1) == M, op, ": idx must have shape (", B, ", ", M,
              ", k), got ", idx.sizes());
  TORCH_CHECK(grad_dist2.sizes() == idx.sizes(), op, ": grad_dist2 shape ", grad_dist2.sizes(),
              " differs from idx shape ", idx.sizes());
  check_index_range(idx, ref.size(1), op, "idx");
}

}  // namespace flowam
