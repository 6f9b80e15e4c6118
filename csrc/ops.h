// C++ entry points of flowam_fast._C: flowam::<name>_cpu for every op of op_list.h and, in CUDA
// builds, flowam::<name>_cuda of the very same type for every op that has a CUDA kernel. Both
// are declared from the list, so a twin cannot drift from its CPU signature, and each .cu file
// defines them as flowam::<name>_cuda, which the compiler accepts only for a declared signature.
#pragma once
#include <ATen/core/Tensor.h>

#include <tuple>

namespace flowam {

// The ops' multiple results, as the dispatcher maps them to a schema's tuple of Tensors.
using TensorPair = std::tuple<at::Tensor, at::Tensor>;
using TensorTriple = std::tuple<at::Tensor, at::Tensor, at::Tensor>;
using TensorQuad = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor>;

#define FLOWAM_OP(name, ret, params, schema) ret name##_cpu params;
#define FLOWAM_CPU_OP FLOWAM_OP
#include "op_list.h"

#ifdef FLOWAM_WITH_CUDA
#define FLOWAM_OP(name, ret, params, schema) ret name##_cuda params;
#define FLOWAM_CPU_OP(name, ret, params, schema)
#include "op_list.h"

// The largest k knn_forward_cuda takes: its top-k lists live in registers, sized at compile
// time (8, 16, 32 or 64 slots).
constexpr int64_t kKnnCudaMaxK = 64;
#endif

}  // namespace flowam
