// The one list of flowam_fast's kernel ops. Each entry is
//   FLOWAM_OP(name, return type, (C++ parameters), "(schema arguments) -> returns")       CPU and CUDA
//   FLOWAM_CPU_OP(name, ...)                                                              CPU only
// and everything else is expanded from it: the declarations of flowam::<name>_cpu and
// flowam::<name>_cuda (ops.h), the schema flowam_fast::<name> and its CPU and CUDA kernels
// (bind.cpp), and the names Python reads back (_C.kernels, _C.cpu_only_kernels). The
// dispatcher checks each kernel's C++ type against its schema when the module loads, so the
// two halves of an entry cannot drift apart.
//
// This file has no include guard: define both macros, include it, and it undefines them.
// Layouts are points-last (B, N, D) unless noted; the Python front ends in flowam_fast/ops make
// inputs contiguous float32 (or float64) and check them first, and every kernel re-checks with
// TORCH_CHECK so a direct call cannot crash either. The CUDA kernel of an op takes and returns
// tensors on one CUDA device.

// k nearest neighbours of each query point among the reference points (self included when ref
// is query). Returns (dist2 (B,M,k) ascending, idx (B,M,k) int64); ties go to the smaller index.
FLOWAM_OP(knn_forward, TensorPair, (const at::Tensor& query, const at::Tensor& ref, int64_t k),
          "(Tensor query, Tensor ref, int k) -> (Tensor, Tensor)")
// Gradient of dist2 w.r.t. query and ref: (grad_query (B,M,D), grad_ref (B,N,D)).
FLOWAM_OP(knn_backward, TensorPair,
          (const at::Tensor& grad_dist2, const at::Tensor& query, const at::Tensor& ref, const at::Tensor& idx),
          "(Tensor grad_dist2, Tensor query, Tensor ref, Tensor idx) -> (Tensor, Tensor)")

// out[b,i,c] = max_j feat[b, idx[b,i,j], c]. Returns (out (B,M,C), argmax (B,M,C) int64: the
// point index j that won, for the backward scatter).
FLOWAM_OP(edge_max_forward, TensorPair, (const at::Tensor& feat, const at::Tensor& idx),
          "(Tensor feat, Tensor idx) -> (Tensor, Tensor)")
FLOWAM_OP(edge_max_backward, at::Tensor, (const at::Tensor& grad_out, const at::Tensor& argmax, int64_t num_points),
          "(Tensor grad_out, Tensor argmax, int num_points) -> Tensor")

// out[b,c] = max_n act(scale[c] * (W x[b,n])[c] + shift[c]), act = LeakyReLU(negative_slope)
// (0 gives ReLU, 1 the identity). Returns (out (B,Cout), argmax (B,Cout) int64).
FLOWAM_OP(linear_max_forward, TensorPair,
          (const at::Tensor& x, const at::Tensor& weight, const at::Tensor& scale, const at::Tensor& shift,
           double negative_slope),
          "(Tensor x, Tensor weight, Tensor scale, Tensor shift, float negative_slope) -> (Tensor, Tensor)")
// Sparse backward: only each channel's argmax point is touched.
// Returns (grad_x (B,N,Cin), grad_weight (Cout,Cin), grad_scale (Cout), grad_shift (Cout)).
FLOWAM_OP(linear_max_backward, TensorQuad,
          (const at::Tensor& grad_out, const at::Tensor& x, const at::Tensor& weight, const at::Tensor& scale,
           const at::Tensor& shift, const at::Tensor& argmax, double negative_slope),
          "(Tensor grad_out, Tensor x, Tensor weight, Tensor scale, Tensor shift, Tensor argmax, "
          "float negative_slope) -> (Tensor, Tensor, Tensor, Tensor)")

// PointNet++'s first shared layer over the groups, its input rewritten as P_j - Q_i:
// out[b,s,k,c] = relu(scale[c] * (P[b, idx[b,s,k], c] - Q[b,s,c]) + shift[c]) with P (B,N,C),
// Q (B,S,C), idx (B,S,K) int64 or int32. Returns out (B,S,K,C).
FLOWAM_OP(group_gather_forward, at::Tensor,
          (const at::Tensor& P, const at::Tensor& Q, const at::Tensor& idx, const at::Tensor& scale,
           const at::Tensor& shift),
          "(Tensor P, Tensor Q, Tensor idx, Tensor scale, Tensor shift) -> Tensor")
// Gradients from the forward's output (out > 0 where the ReLU passes): grad_P scatter-added to
// the gathered rows, grad_Q = -(sum over k). Returns (grad_P (B,num_points,C), grad_Q (B,S,C)).
FLOWAM_OP(group_gather_backward, TensorPair,
          (const at::Tensor& grad_out, const at::Tensor& out, const at::Tensor& idx, const at::Tensor& scale,
           int64_t num_points),
          "(Tensor grad_out, Tensor out, Tensor idx, Tensor scale, int num_points) -> (Tensor, Tensor)")

// Per-class statistics over all points of all samples: acts (B,C,N), or (B,N,C) with
// points_last, labels (B) int64. Returns (count (K) int64 (points), mean (K,C) float64,
// m2 (K,C) float64).
FLOWAM_OP(flow_stats, TensorTriple,
          (const at::Tensor& acts, const at::Tensor& labels, int64_t num_classes, bool points_last),
          "(Tensor acts, Tensor labels, int num_classes, bool points_last=False) -> (Tensor, Tensor, Tensor)")

// Per-sample flow alignment loss (see docs/design.md): acts (B,C,N), or (B,N,C) with points_last
// (the fast paths' layout, read without a transposing copy), labels (B), mu/sigma (K,C).
// Returns (loss (B), mean (B,C), std (B,C)); mean/std are kept for the backward, whose
// gradient has acts' layout.
FLOWAM_OP(flow_align_forward, TensorTriple,
          (const at::Tensor& acts, const at::Tensor& labels, const at::Tensor& mu, const at::Tensor& sigma,
           bool points_last),
          "(Tensor acts, Tensor labels, Tensor mu, Tensor sigma, bool points_last=False) -> (Tensor, Tensor, Tensor)")
FLOWAM_OP(flow_align_backward, at::Tensor,
          (const at::Tensor& grad_loss, const at::Tensor& acts, const at::Tensor& labels, const at::Tensor& mu,
           const at::Tensor& sigma, const at::Tensor& mean, const at::Tensor& std, bool points_last),
          "(Tensor grad_loss, Tensor acts, Tensor labels, Tensor mu, Tensor sigma, Tensor mean, Tensor std, "
          "bool points_last=False) -> Tensor")

// Farthest point sampling of points (B,N,3): num_samples indices per sample (B,S) int64,
// starting at point 0, each next one the point of largest min squared distance to those
// chosen, ties to the smaller index (distances by fps/fps_math.h's formula).
FLOWAM_OP(farthest_point_sample, at::Tensor, (const at::Tensor& points, int64_t num_samples),
          "(Tensor points, int num_samples) -> Tensor")

// Ball query: for each centroid (B,S,3) the first nsample points (B,N,3), in index order, with
// squared distance <= radius^2, padded with the first; an empty ball gives the nearest point
// in every slot (ball_query/ball_query_math.h). Returns idx (B,S,nsample) int64.
FLOWAM_OP(ball_query, at::Tensor,
          (const at::Tensor& points, const at::Tensor& centroids, double radius, int64_t nsample),
          "(Tensor points, Tensor centroids, float radius, int nsample) -> Tensor")

// Quantile alignment loss (see flowam_fast/ops/quantile_align.py): acts (B,C,N), or (B,N,C) with
// points_last, labels (B), quantiles (K,C,Q) the class quantile functions at levels
// (j + 0.5) / Q, read at the N levels by linear interpolation, inv_scale (K,C) = 1 / s, floats
// of one dtype. Returns (loss (B), grad (acts' layout)): grad is d loss[b] / d acts[b], so the
// backward is grad_loss[b] * grad. CPU only: on a GPU torch.sort is fast, and the front end
// uses it there.
FLOWAM_CPU_OP(quantile_align_forward, TensorPair,
              (const at::Tensor& acts, const at::Tensor& labels, const at::Tensor& quantiles,
               const at::Tensor& inv_scale, bool points_last),
              "(Tensor acts, Tensor labels, Tensor quantiles, Tensor inv_scale, bool points_last) -> (Tensor, Tensor)")

// Each (sample, channel) row of acts (B,C,N), or (B,N,C) with points_last, sorted ascending:
// (B,C,N), by quantile_align's row sort (the flows' per-sample quantile functions). CPU only.
FLOWAM_CPU_OP(quantile_sort, at::Tensor, (const at::Tensor& acts, bool points_last),
              "(Tensor acts, bool points_last) -> Tensor")

#undef FLOWAM_OP
#undef FLOWAM_CPU_OP
