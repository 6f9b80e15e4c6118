#include <torch/extension.h>

#include "ops.h"

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "flowam_fast fused kernels (C++ CPU; CUDA when built with it)";
  m.def("knn_forward_cpu", &flowam::knn_forward_cpu, "fused kNN (forward)");
  m.def("knn_backward_cpu", &flowam::knn_backward_cpu, "fused kNN (dist2 gradient)");
  m.def("edge_max_forward_cpu", &flowam::edge_max_forward_cpu, "gather-max over neighbours");
  m.def("edge_max_backward_cpu", &flowam::edge_max_backward_cpu, "scatter to the argmax neighbour");
  m.def("linear_max_forward_cpu", &flowam::linear_max_forward_cpu, "linear + affine + act + max-pool");
  m.def("linear_max_backward_cpu", &flowam::linear_max_backward_cpu, "sparse backward of linear_max");
  m.def("flow_stats_cpu", &flowam::flow_stats_cpu, "per-class activation statistics", py::arg("acts"),
        py::arg("labels"), py::arg("num_classes"), py::arg("points_last") = false);
  m.def("flow_align_forward_cpu", &flowam::flow_align_forward_cpu, "flow alignment loss", py::arg("acts"),
        py::arg("labels"), py::arg("mu"), py::arg("sigma"), py::arg("points_last") = false);
  m.def("flow_align_backward_cpu", &flowam::flow_align_backward_cpu, "flow alignment gradient",
        py::arg("grad_loss"), py::arg("acts"), py::arg("labels"), py::arg("mu"), py::arg("sigma"), py::arg("mean"),
        py::arg("std"), py::arg("points_last") = false);
#ifdef FLOWAM_WITH_CUDA
  m.attr("with_cuda") = true;
#else
  m.attr("with_cuda") = false;
#endif
}
