// Registers every op of op_list.h with the PyTorch dispatcher as flowam_fast::<name>: its
// schema, its CPU kernel and (in CUDA builds) its CUDA kernel, so torch.ops.flowam_fast.<name>
// runs the kernel of its inputs' device. The Python module itself carries only what Python
// reads back: the ops' names, whether CUDA kernels were built and the CUDA kNN's largest k.
// The fake kernels and the autograd formulas are registered from Python (flowam_fast/ops).
#include <torch/csrc/utils/pybind.h>
#include <torch/library.h>

#include "ops.h"

TORCH_LIBRARY(flowam_fast, m) {
#define FLOWAM_OP(name, ret, params, schema) m.def(#name schema);
#define FLOWAM_CPU_OP FLOWAM_OP
#include "op_list.h"
}

TORCH_LIBRARY_IMPL(flowam_fast, CPU, m) {
#define FLOWAM_OP(name, ret, params, schema) m.impl(#name, &flowam::name##_cpu);
#define FLOWAM_CPU_OP FLOWAM_OP
#include "op_list.h"
}

#ifdef FLOWAM_WITH_CUDA
TORCH_LIBRARY_IMPL(flowam_fast, CUDA, m) {
#define FLOWAM_OP(name, ret, params, schema) m.impl(#name, &flowam::name##_cuda);
#define FLOWAM_CPU_OP(name, ret, params, schema)
#include "op_list.h"
}
#endif

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "flowam_fast fused kernels, registered as torch.ops.flowam_fast.* (C++ CPU; CUDA when built with it)";
  std::vector<std::string> kernels, cpu_only;
#define FLOWAM_OP(name, ret, params, schema) kernels.emplace_back(#name);
#define FLOWAM_CPU_OP(name, ret, params, schema) \
  kernels.emplace_back(#name);                   \
  cpu_only.emplace_back(#name);
#include "op_list.h"
  m.attr("kernels") = py::tuple(py::cast(kernels));
  m.attr("cpu_only_kernels") = py::tuple(py::cast(cpu_only));
#ifdef FLOWAM_WITH_CUDA
  m.attr("with_cuda") = true;
  m.attr("knn_max_k_cuda") = flowam::kKnnCudaMaxK;
#else
  m.attr("with_cuda") = false;
#endif
}
