// Input checks of flow_stats and flow_align, one set for the CPU and the CUDA entry points.
#pragma once
#include <cstdint>

#include "checks.h"

namespace flowam {

// The channel and point dimensions of acts: (B, C, N), or (B, N, C) when points_last.
inline int64_t flow_channel_dim(bool points_last) { return points_last ? 2 : 1; }
inline int64_t flow_point_dim(bool points_last) { return points_last ? 1 : 2; }

inline void flow_check_acts_labels(const at::Tensor& acts, const at::Tensor& labels, int64_t num_classes,
                                   bool points_last, c10::DeviceType dev, const char* op) {
  check_dense(acts, "acts", 3, dev, op);
  check_dense(labels, "labels", 1, dev, op);
  check_same_device(labels, "labels", acts, "acts", op);
  const auto dt = acts.scalar_type();
  TORCH_CHECK(is_float_or_double(dt), op, ": acts must be float32 or float64, got ", dt);
  TORCH_CHECK(acts.size(flow_point_dim(points_last)) > 0, op, ": acts has no points (shape ", acts.sizes(), ")");
  TORCH_CHECK(labels.scalar_type() == at::kLong, op, ": labels must be int64, got ", labels.scalar_type());
  TORCH_CHECK(labels.size(0) == acts.size(0), op, ": labels has ", labels.size(0), " entries but acts has ",
              acts.size(0), " samples");
  TORCH_CHECK(num_classes > 0, op, ": num_classes must be positive, got ", num_classes);
  if (labels.numel() == 0) return;
  auto [lo, hi] = at::aminmax(labels);
  const int64_t mn = lo.item<int64_t>(), mx = hi.item<int64_t>();
  TORCH_CHECK(mn >= 0 && mx < num_classes, op, ": label ", (mn < 0 ? mn : mx), " is outside [0, ", num_classes,
              ")");
}

// mu and sigma: (K, C) floating tensors beside acts (the entry points take them as float64).
inline void flow_check_flow(const at::Tensor& acts, const at::Tensor& mu, const at::Tensor& sigma, bool points_last,
                            c10::DeviceType dev, const char* op) {
  const int64_t channels = acts.size(flow_channel_dim(points_last));
  for (const auto* t : {&mu, &sigma}) {
    const char* name = t == &mu ? "mu" : "sigma";
    check_device(*t, dev, op, name);
    check_same_device(*t, name, acts, "acts", op);
    TORCH_CHECK(t->dim() == 2, op, ": ", name, " must have 2 dimensions (classes, channels), got shape ",
                t->sizes());
    TORCH_CHECK(at::isFloatingType(t->scalar_type()), op, ": ", name, " must be floating point, got ",
                t->scalar_type());
    TORCH_CHECK(t->size(1) == channels, op, ": ", name, " has ", t->size(1), " channels but acts has ", channels);
  }
  TORCH_CHECK(mu.sizes() == sigma.sizes(), op, ": mu and sigma must have one shape, got ", mu.sizes(), " and ",
              sigma.sizes());
  TORCH_CHECK(mu.size(0) > 0, op, ": mu and sigma have no classes");
}

inline void flow_check_align_forward(const at::Tensor& acts, const at::Tensor& labels, const at::Tensor& mu,
                                     const at::Tensor& sigma, bool points_last, c10::DeviceType dev,
                                     const char* op) {
  check_dense(acts, "acts", 3, dev, op);
  flow_check_flow(acts, mu, sigma, points_last, dev, op);
  flow_check_acts_labels(acts, labels, mu.size(0), points_last, dev, op);
}

inline void flow_check_align_backward(const at::Tensor& grad_loss, const at::Tensor& acts, const at::Tensor& labels,
                                      const at::Tensor& mu, const at::Tensor& sigma, const at::Tensor& mean,
                                      const at::Tensor& std, bool points_last, c10::DeviceType dev,
                                      const char* op) {
  flow_check_align_forward(acts, labels, mu, sigma, points_last, dev, op);
  check_dense(grad_loss, "grad_loss", 1, dev, op);
  check_dense(mean, "mean", 2, dev, op);
  check_dense(std, "std", 2, dev, op);
  check_same_device(grad_loss, "grad_loss", acts, "acts", op);
  check_same_device(mean, "mean", acts, "acts", op);
  check_same_device(std, "std", acts, "acts", op);
  const int64_t B = acts.size(0), C = acts.size(flow_channel_dim(points_last));
  TORCH_CHECK(at::isFloatingType(grad_loss.scalar_type()), op, ": grad_loss must be floating point, got ",
              grad_loss.scalar_type());
  TORCH_CHECK(grad_loss.size(0) == B, op, ": grad_loss has ", grad_loss.size(0), " entries but acts has ", B,
              " samples");
  for (const auto* t : {&mean, &std}) {
    const char* name = t == &mean ? "mean" : "std";
    TORCH_CHECK(t->scalar_type() == at::kDouble, op, ": ", name, " must be float64 (as the forward returns it), got ",
                t->scalar_type());
    TORCH_CHECK(t->size(0) == B && t->size(1) == C, op, ": ", name, " must have shape (", B, ", ", C, "), got ",
                t->sizes());
  }
}

}  // namespace flowam
