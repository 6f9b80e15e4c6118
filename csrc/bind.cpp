// pybind11 with the Tensor casters only: <torch/extension.h> also parses the whole C++ frontend.
#include <torch/csrc/utils/pybind.h>

#include "ops.h"

// Binds <name>_cpu and, in a CUDA build, <name>_cuda with one docstring and one set of argument
// names, so a front end calls either the same way.
#ifdef FLOWAM_WITH_CUDA
#define FLOWAM_DEF(m, name, doc, ...)                           \
  m.def(#name "_cpu", &flowam::name##_cpu, doc, __VA_ARGS__); \
  m.def(#name "_cuda", &flowam::name##_cuda, doc, __VA_ARGS__)
#else
#define FLOWAM_DEF(m, name, doc, ...) m.def(#name "_cpu", &flowam::name##_cpu, doc, __VA_ARGS__)
#endif

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "flowam_fast fused kernels (C++ CPU; CUDA when built with it)";
  FLOWAM_DEF(m, knn_forward, "fused kNN (forward)", py::arg("query"), py::arg("ref"), py::arg("k"));
  FLOWAM_DEF(m, knn_backward, "fused kNN (dist2 gradient)", py::arg("grad_dist2"), py::arg("query"), py::arg("ref"),
             py::arg("idx"));
  FLOWAM_DEF(m, edge_max_forward, "gather-max over neighbours", py::arg("feat"), py::arg("idx"));
  FLOWAM_DEF(m, edge_max_backward, "scatter to the argmax neighbour", py::arg("grad_out"), py::arg("argmax"),
             py::arg("num_points"));
  FLOWAM_DEF(m, linear_max_forward, "linear + affine + act + max-pool", py::arg("x"), py::arg("weight"),
             py::arg("scale"), py::arg("shift"), py::arg("negative_slope"));
  FLOWAM_DEF(m, linear_max_backward, "sparse backward of linear_max", py::arg("grad_out"), py::arg("x"),
             py::arg("weight"), py::arg("scale"), py::arg("shift"), py::arg("argmax"), py::arg("negative_slope"));
  FLOWAM_DEF(m, group_gather_forward, "grouped gather of P_j - Q_i + affine + relu", py::arg("P"), py::arg("Q"),
             py::arg("idx"), py::arg("scale"), py::arg("shift"));
  FLOWAM_DEF(m, group_gather_backward, "gradients of group_gather to P and Q", py::arg("grad_out"), py::arg("out"),
             py::arg("idx"), py::arg("scale"), py::arg("num_points"));
  FLOWAM_DEF(m, flow_stats, "per-class activation statistics", py::arg("acts"), py::arg("labels"),
             py::arg("num_classes"), py::arg("points_last") = false);
  FLOWAM_DEF(m, flow_align_forward, "flow alignment loss", py::arg("acts"), py::arg("labels"), py::arg("mu"),
             py::arg("sigma"), py::arg("points_last") = false);
  FLOWAM_DEF(m, flow_align_backward, "flow alignment gradient", py::arg("grad_loss"), py::arg("acts"),
             py::arg("labels"), py::arg("mu"), py::arg("sigma"), py::arg("mean"), py::arg("std"),
             py::arg("points_last") = false);
  FLOWAM_DEF(m, farthest_point_sample, "farthest point sampling", py::arg("points"), py::arg("num_samples"));
  FLOWAM_DEF(m, ball_query, "first nsample points within radius of each centroid", py::arg("points"),
             py::arg("centroids"), py::arg("radius"), py::arg("nsample"));
  // CPU only (ops.h says why), so bound without the CUDA twin of FLOWAM_DEF.
  m.def("quantile_align_forward_cpu", &flowam::quantile_align_forward_cpu, "quantile alignment loss and gradient",
        py::arg("acts"), py::arg("labels"), py::arg("quantiles"), py::arg("inv_scale"), py::arg("points_last"));
  m.def("quantile_sort_cpu", &flowam::quantile_sort_cpu, "rows sorted ascending", py::arg("acts"),
        py::arg("points_last"));
#ifdef FLOWAM_WITH_CUDA
  m.attr("with_cuda") = true;
  m.attr("knn_max_k_cuda") = flowam::kKnnCudaMaxK;
#else
  m.attr("with_cuda") = false;
#endif
}
