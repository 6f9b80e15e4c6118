// C++ entry points of flowam_fast._C. Layouts are points-last (B, N, D) unless noted; the
// Python front ends in flowam_fast/ops make inputs contiguous float32 and check them first,
// and every function here re-checks with TORCH_CHECK so a direct call cannot crash either.
// Each <op>_cpu has a CUDA twin <op>_cuda (in CUDA builds) of the very same type, taking and
// returning tensors on one CUDA device; the front ends pick one by the backend's name.
#pragma once
#include <ATen/core/Tensor.h>
#include <vector>

namespace flowam {

// k nearest neighbours of each query point among the reference points (self included when
// ref is query). Returns {dist2 (B,M,k) ascending float32, idx (B,M,k) int64}; ties go to the
// smaller index.
std::vector<at::Tensor> knn_forward_cpu(const at::Tensor& query, const at::Tensor& ref, int64_t k);
// Gradient of dist2 w.r.t. query and ref: {grad_query (B,M,D), grad_ref (B,N,D)}.
std::vector<at::Tensor> knn_backward_cpu(const at::Tensor& grad_dist2, const at::Tensor& query,
                                         const at::Tensor& ref, const at::Tensor& idx);

// out[b,i,c] = max_j feat[b, idx[b,i,j], c]. Returns {out (B,M,C), argmax (B,M,C) int64:
// the point index j that won, for the backward scatter}.
std::vector<at::Tensor> edge_max_forward_cpu(const at::Tensor& feat, const at::Tensor& idx);
at::Tensor edge_max_backward_cpu(const at::Tensor& grad_out, const at::Tensor& argmax, int64_t num_points);

// out[b,c] = max_n act(scale[c] * (W x[b,n])[c] + shift[c]), act = LeakyReLU(negative_slope)
// (0 gives ReLU, 1 the identity). Returns {out (B,Cout), argmax (B,Cout) int64}.
std::vector<at::Tensor> linear_max_forward_cpu(const at::Tensor& x, const at::Tensor& weight,
                                               const at::Tensor& scale, const at::Tensor& shift,
                                               double negative_slope);
// Sparse backward: only each channel's argmax point is touched.
// Returns {grad_x (B,N,Cin), grad_weight (Cout,Cin), grad_scale (Cout), grad_shift (Cout)}.
std::vector<at::Tensor> linear_max_backward_cpu(const at::Tensor& grad_out, const at::Tensor& x,
                                                const at::Tensor& weight, const at::Tensor& scale,
                                                const at::Tensor& shift, const at::Tensor& argmax,
                                                double negative_slope);

// PointNet++'s first shared layer over the groups, its input rewritten as P_j - Q_i:
// out[b,s,k,c] = relu(scale[c] * (P[b, idx[b,s,k], c] - Q[b,s,c]) + shift[c]) with P (B,N,C),
// Q (B,S,C), idx (B,S,K) int64 or int32. Returns out (B,S,K,C).
at::Tensor group_gather_forward_cpu(const at::Tensor& P, const at::Tensor& Q, const at::Tensor& idx,
                                    const at::Tensor& scale, const at::Tensor& shift);
// Gradients from the forward's output (out > 0 where the ReLU passes): grad_P scatter-added to
// the gathered rows, grad_Q = -(sum over k). Returns {grad_P (B,num_points,C), grad_Q (B,S,C)}.
std::vector<at::Tensor> group_gather_backward_cpu(const at::Tensor& grad_out, const at::Tensor& out,
                                                  const at::Tensor& idx, const at::Tensor& scale,
                                                  int64_t num_points);

// Per-class statistics over all points of all samples: acts (B,C,N), or (B,N,C) with
// points_last, labels (B) int64.
// Returns {count (K) int64 (points), mean (K,C) float64, m2 (K,C) float64}.
std::vector<at::Tensor> flow_stats_cpu(const at::Tensor& acts, const at::Tensor& labels, int64_t num_classes,
                                       bool points_last);

// Per-sample flow alignment loss (see docs/design.md): acts (B,C,N), or (B,N,C) with points_last
// (the fast paths' layout, read without a transposing copy), labels (B), mu/sigma (K,C).
// Returns {loss (B), mean (B,C), std (B,C)}; mean/std are kept for the backward, whose
// gradient has acts' layout.
std::vector<at::Tensor> flow_align_forward_cpu(const at::Tensor& acts, const at::Tensor& labels,
                                               const at::Tensor& mu, const at::Tensor& sigma,
                                               bool points_last);
at::Tensor flow_align_backward_cpu(const at::Tensor& grad_loss, const at::Tensor& acts,
                                   const at::Tensor& labels, const at::Tensor& mu,
                                   const at::Tensor& sigma, const at::Tensor& mean,
                                   const at::Tensor& std, bool points_last);

// Quantile alignment loss (see flowam_fast/ops/quantile_align.py): acts (B,C,N), or (B,N,C) with
// points_last, labels (B),
// quantiles (K,C,Q) the class quantile functions at levels (j + 0.5) / Q, read at the N levels
// by linear interpolation, inv_scale (K,C) = 1 / s, floats of one dtype. Returns {loss (B),
// grad (acts' layout)}: grad is d loss[b] / d acts[b], so the backward is grad_loss[b] * grad. CPU
// only: on a GPU torch.sort is fast, and the front end uses it there.
std::vector<at::Tensor> quantile_align_forward_cpu(const at::Tensor& acts, const at::Tensor& labels,
                                                   const at::Tensor& quantiles, const at::Tensor& inv_scale,
                                                   bool points_last);

// Each (sample, channel) row of acts (B,C,N), or (B,N,C) with points_last, sorted ascending:
// (B,C,N), by quantile_align's row sort (the flows' per-sample quantile functions). CPU only.
at::Tensor quantile_sort_cpu(const at::Tensor& acts, bool points_last);

// Farthest point sampling of points (B,N,3): num_samples indices per sample (B,S) int64,
// starting at point 0, each next one the point of largest min squared distance to those
// chosen, ties to the smaller index (distances by fps/fps_math.h's formula).
at::Tensor farthest_point_sample_cpu(const at::Tensor& points, int64_t num_samples);

// Ball query: for each centroid (B,S,3) the first nsample points (B,N,3), in index order, with
// squared distance <= radius^2, padded with the first; an empty ball gives the nearest point
// in every slot (ball_query/ball_query_math.h). Returns idx (B,S,nsample) int64.
at::Tensor ball_query_cpu(const at::Tensor& points, const at::Tensor& centroids, double radius, int64_t nsample);

#ifdef FLOWAM_WITH_CUDA
// Declared through decltype, so a twin cannot drift from its CPU signature; each .cu file
// defines them as flowam::<op>_cuda, which the compiler accepts only for a declared signature.
decltype(knn_forward_cpu) knn_forward_cuda;
decltype(knn_backward_cpu) knn_backward_cuda;
decltype(edge_max_forward_cpu) edge_max_forward_cuda;
decltype(edge_max_backward_cpu) edge_max_backward_cuda;
decltype(linear_max_forward_cpu) linear_max_forward_cuda;
decltype(linear_max_backward_cpu) linear_max_backward_cuda;
decltype(group_gather_forward_cpu) group_gather_forward_cuda;
decltype(group_gather_backward_cpu) group_gather_backward_cuda;
decltype(flow_stats_cpu) flow_stats_cuda;
decltype(flow_align_forward_cpu) flow_align_forward_cuda;
decltype(flow_align_backward_cpu) flow_align_backward_cuda;
decltype(farthest_point_sample_cpu) farthest_point_sample_cuda;
decltype(ball_query_cpu) ball_query_cuda;

// The largest k knn_forward_cuda takes: its top-k lists live in registers, sized at compile
// time (8, 16, 32 or 64 slots).
constexpr int64_t kKnnCudaMaxK = 64;
#endif

}  // namespace flowam
