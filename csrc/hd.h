// Marks per-element functions that both the C++ CPU loops and the CUDA kernels call, so the
// CPU tests exercise the arithmetic the GPU runs. Plain C++ compilers see plain inlines.
#pragma once
#if defined(__CUDACC__) || defined(__HIPCC__)
#define FLOWAM_HD __host__ __device__ __forceinline__
#else
#define FLOWAM_HD inline
#endif
