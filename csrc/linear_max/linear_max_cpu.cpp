// linear_max on the CPU: out[b,c] = max_n act(scale[c] * (W x[b,n])[c] + shift[c]).
//
// A register-blocked micro-kernel computes a (kRows points) x (kVecs SIMD vectors of channels)
// block of W·x with its accumulators in registers; the epilogue (affine map, activation,
// running max/argmax) consumes the block at once from a 1 KiB tile in L1, so the (B, N, Cout)
// activation is never written. A work item is (sample, panel of channels): its running max
// stays in registers across all the sample's points, the packed weight panel (Cin x panel
// width) stays in L1 and the sample's points in L2. The kernel beats MKL's sgemm on the same
// product (which must also write the activation) and needs no BLAS. Each output element is
// reduced over n in one fixed order whatever the thread count, so results are deterministic.
// Per-operator headers: <ATen/ATen.h> declares every ATen op and was most of the build time.
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/zeros.h>
#include <ATen/ops/zeros_like.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>

#include "linear_max/linear_max_checks.h"
#include "linear_max/linear_max_math.h"
#include "ops.h"

namespace flowam {
namespace {

#if defined(__AVX512F__)
constexpr int kVecBytes = 64;
#else
constexpr int kVecBytes = 32;  // AVX2-class targets: 16 registers of 32 bytes
#endif
constexpr int kRows = 8;  // points per micro-tile: kRows * kVecs accumulators + weights fit the registers
constexpr int kVecs = 2;  // SIMD vectors of channels per panel
// The weight gradient's work items own slices of input channels, a multiple of this many:
// whole 64-byte lines of each row of x in float32.
constexpr int64_t kGradColumns = 16;

// Items per parallel task such that a task does at least ~2^18 multiply-adds: small calls
// (gradcheck, one AM job) then run inline instead of waking the thread pool.
int64_t grain(int64_t work_per_item) { return std::max<int64_t>(1, (int64_t(1) << 18) / std::max<int64_t>(work_per_item, 1)); }

template <typename T>
struct Simd {
  static constexpr int kLanes = kVecBytes / sizeof(T);
  static constexpr int kPanel = kLanes * kVecs;  // channels per panel
  typedef T Vec __attribute__((vector_size(kVecBytes)));
  // Point indices ride in an integer vector with the lanes of Vec, so the argmax select is one
  // masked blend; int32 for float is safe because N < 2^31 is checked.
  using Index = std::conditional_t<sizeof(T) == 4, int32_t, int64_t>;
  typedef Index IndexVec __attribute__((vector_size(kVecBytes)));
};

// Unaligned vector load. The by-value alias lets the compiler keep the result in a register
// (a memcpy into a local makes GCC spill it to the stack inside the k loop).
template <typename T>
inline typename Simd<T>::Vec load(const T* p) {
  typedef typename Simd<T>::Vec Unaligned __attribute__((aligned(sizeof(T))));
  return *reinterpret_cast<const Unaligned*>(p);
}

// Weights, scale and shift regrouped by panel: wp[panel][k][j] = W[panel*P + j, k] (zero for
// the padding channels past Cout), so one k step of the micro-kernel loads kVecs contiguous
// vectors. Cout x Cin work, negligible beside the B x N x Cout x Cin product.
struct PackedWeights {
  at::Tensor w, scale, shift;
  int64_t panels;
};

template <typename T>
PackedWeights pack(const at::Tensor& weight, const at::Tensor& scale, const at::Tensor& shift) {
  constexpr int P = Simd<T>::kPanel;
  const int64_t cout = weight.size(0), cin = weight.size(1);
  const int64_t panels = (cout + P - 1) / P;
  auto opts = weight.options();
  PackedWeights pk{at::zeros({panels, cin, P}, opts), at::zeros({panels * P}, opts),
                   at::zeros({panels * P}, opts), panels};
  const T* w = weight.data_ptr<T>();
  T* wp = pk.w.data_ptr<T>();
  for (int64_t c = 0; c < cout; ++c) {
    const int64_t p = c / P, j = c % P;
    for (int64_t k = 0; k < cin; ++k) wp[(p * cin + k) * P + j] = w[c * cin + k];
  }
  std::memcpy(pk.scale.data_ptr<T>(), scale.data_ptr<T>(), cout * sizeof(T));
  std::memcpy(pk.shift.data_ptr<T>(), shift.data_ptr<T>(), cout * sizeof(T));
  return pk;
}

// acc[p][v] = (W x_row[p]) for the panel's channels v*L .. v*L+L-1. Kept out of line so that
// only the accumulators and the weight vectors are live in its loop: inlined into panel_max,
// GCC spills the weight vectors to the stack to keep the epilogue's vectors in registers.
template <typename T>
__attribute__((noinline)) void tile_product(const T* const* row, int64_t cin, const T* wpanel,
                                            typename Simd<T>::Vec (*out)[kVecs]) {
  using Vec = typename Simd<T>::Vec;
  constexpr int L = Simd<T>::kLanes;
  Vec acc[kRows][kVecs];
  for (int p = 0; p < kRows; ++p)
    for (int v = 0; v < kVecs; ++v) acc[p][v] = Vec{};
  for (int64_t k = 0; k < cin; ++k) {
    Vec w[kVecs];
    for (int v = 0; v < kVecs; ++v) w[v] = load(wpanel + (k * kVecs + v) * L);
    for (int p = 0; p < kRows; ++p) {
      const T xk = row[p][k];
      for (int v = 0; v < kVecs; ++v) acc[p][v] += xk * w[v];
    }
  }
  for (int p = 0; p < kRows; ++p)
    for (int v = 0; v < kVecs; ++v) out[p][v] = acc[p][v];
}

// One (sample, panel) work item: running max over all n of the panel's channels.
template <typename T>
void panel_max(const T* xb, int64_t n_points, int64_t cin, const T* wpanel, const T* scale,
               const T* shift, T slope, T* out, int64_t* argmax, int64_t n_channels) {
  using S = Simd<T>;
  using Vec = typename S::Vec;
  using IndexVec = typename S::IndexVec;
  using Index = typename S::Index;
  constexpr int L = S::kLanes;

  Vec sc[kVecs], sh[kVecs], best[kVecs];
  IndexVec best_n[kVecs];
  for (int v = 0; v < kVecs; ++v) {
    sc[v] = load(scale + v * L);
    sh[v] = load(shift + v * L);
    best[v] = Vec{} - std::numeric_limits<T>::infinity();
    best_n[v] = IndexVec{};
  }
  for (int64_t n0 = 0; n0 < n_points; n0 += kRows) {
    // Past the last point the tile repeats point N-1: an equal value never replaces the
    // incumbent, so the padding cannot change the result.
    const T* row[kRows];
    Index idx[kRows];
    for (int p = 0; p < kRows; ++p) {
      idx[p] = static_cast<Index>(std::min<int64_t>(n0 + p, n_points - 1));
      row[p] = xb + idx[p] * cin;
    }
    Vec acc[kRows][kVecs];
    tile_product<T>(row, cin, wpanel, acc);
    for (int p = 0; p < kRows; ++p)
      for (int v = 0; v < kVecs; ++v)
        running_max(leaky_relu(affine(acc[p][v], sc[v], sh[v]), slope), IndexVec{} + idx[p], best[v],
                    best_n[v]);
  }
  for (int v = 0; v < kVecs; ++v)
    for (int l = 0; l < L; ++l) {
      const int64_t c = v * L + l;
      if (c < n_channels) {
        out[c] = best[v][l];
        argmax[c] = best_n[v][l];
      }
    }
}

template <typename T>
void forward_impl(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& scale,
                  const at::Tensor& shift, T slope, at::Tensor& out, at::Tensor& argmax) {
  constexpr int P = Simd<T>::kPanel;
  const int64_t B = x.size(0), N = x.size(1), cin = x.size(2), cout = weight.size(0);
  const PackedWeights pk = pack<T>(weight, scale, shift);
  const T* xp = x.data_ptr<T>();
  const T* wp = pk.w.data_ptr<T>();
  const T* sp = pk.scale.data_ptr<T>();
  const T* hp = pk.shift.data_ptr<T>();
  T* op = out.data_ptr<T>();
  int64_t* ap = argmax.data_ptr<int64_t>();
  const int64_t panels = pk.panels;
  // Consecutive items of one thread share a sample, so its points stay in cache across panels.
  at::parallel_for(0, B * panels, grain(N * cin * P), [&](int64_t begin, int64_t end) {
    for (int64_t item = begin; item < end; ++item) {
      const int64_t b = item / panels, p = item % panels;
      const int64_t c0 = p * P;
      panel_max<T>(xp + b * N * cin, N, cin, wp + p * cin * P, sp + c0, hp + c0, slope,
                   op + b * cout + c0, ap + b * cout + c0, std::min<int64_t>(P, cout - c0));
    }
  });
}

template <typename T>
T dot(const T* a, const T* b, int64_t n) {
  T acc = 0;
#pragma omp simd reduction(+ : acc)
  for (int64_t k = 0; k < n; ++k) acc += a[k] * b[k];
  return acc;
}

// Only each channel's argmax point carries gradient. Pass 1 (parallel over samples: each
// thread owns its samples' rows of grad_x) scatters into grad_x and records, per (b, c), the
// pre-activation gradient d = g * act'(z) and W x; pass 2 reduces those over the batch into
// the parameter gradients, every sum over the samples in increasing order. Pass 2 splits
// grad_W by columns (input channels), one slice per thread, not by rows: a work item walks the
// samples and, per sample, all channels, whose argmax rows lie in that sample's few points.
// Split by rows, each item read one row per sample across all of x, a cache and TLB miss per
// (sample, channel), the largest part of the backward of many small groups (PointNet++'s B*S
// groups of K points). Every element's sum runs over the samples in order whichever item
// computes it, so the split cannot change the result.
// z at the argmax is recomputed (a Cin dot product, cheaper than storing the forward's z): its
// rounding may differ from the forward's in the last bit, which changes act'(z) only for a
// pre-activation within an ulp of the kink.
template <typename T>
void backward_impl(const at::Tensor& grad_out, const at::Tensor& x, const at::Tensor& weight,
                   const at::Tensor& scale, const at::Tensor& shift, const at::Tensor& argmax,
                   T slope, at::Tensor& grad_x, at::Tensor& grad_w, at::Tensor& grad_scale,
                   at::Tensor& grad_shift) {
  const int64_t B = x.size(0), N = x.size(1), cin = x.size(2), cout = weight.size(0);
  const T* g = grad_out.data_ptr<T>();
  const T* xp = x.data_ptr<T>();
  const T* w = weight.data_ptr<T>();
  const T* sc = scale.data_ptr<T>();
  const T* sh = shift.data_ptr<T>();
  const int64_t* am = argmax.data_ptr<int64_t>();
  at::Tensor dz = at::empty({B, cout}, x.options());
  at::Tensor wx = at::empty({B, cout}, x.options());
  T* dzp = dz.data_ptr<T>();
  T* wxp = wx.data_ptr<T>();
  T* gx = grad_x.data_ptr<T>();

  at::parallel_for(0, B, grain(cout * cin), [&](int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; ++b) {
      for (int64_t c = 0; c < cout; ++c) {
        const int64_t i = b * cout + c;
        const int64_t row = (b * N + am[i]) * cin;
        const T* wc = w + c * cin;
        const T wxc = dot(wc, xp + row, cin);
        const T d = linear_max_dz(g[i], wxc, sc[c], sh[c], slope);
        wxp[i] = wxc;
        dzp[i] = d;
        if (d == T(0)) continue;
        const T coef = d * sc[c];
        T* gr = gx + row;
#pragma omp simd
        for (int64_t k = 0; k < cin; ++k) gr[k] += coef * wc[k];
      }
    }
  });

  T* gw = grad_w.data_ptr<T>();
  T* gs = grad_scale.data_ptr<T>();  // zeros on entry, as grad_w
  T* gh = grad_shift.data_ptr<T>();
  // Slices of whole cache lines; the widest that still gives every thread one.
  const int64_t threads = std::max<int64_t>(1, at::get_num_threads());
  const int64_t width = (cin + threads - 1) / threads;
  const int64_t cols = std::max<int64_t>(kGradColumns, (width + kGradColumns - 1) / kGradColumns * kGradColumns);
  const int64_t slices = (cin + cols - 1) / cols;
  at::parallel_for(0, slices, grain(B * cout * cols), [&](int64_t begin, int64_t end) {
    for (int64_t slice = begin; slice < end; ++slice) {
      const int64_t k0 = slice * cols, k1 = std::min(cin, k0 + cols);
      for (int64_t b = 0; b < B; ++b) {
        for (int64_t c = 0; c < cout; ++c) {
          const int64_t i = b * cout + c;
          const T d = dzp[i];
          if (slice == 0) {  // the scale and shift gradients ride with the first slice
            gs[c] += d * wxp[i];
            gh[c] += d;
          }
          if (d == T(0)) continue;
          const T coef = d * sc[c];
          const T* xr = xp + (b * N + am[i]) * cin;
          T* gwc = gw + c * cin;
#pragma omp simd
          for (int64_t k = k0; k < k1; ++k) gwc[k] += coef * xr[k];
        }
      }
    }
  });
}

}  // namespace

TensorPair linear_max_forward_cpu(const at::Tensor& x, const at::Tensor& weight,
                                  const at::Tensor& scale, const at::Tensor& shift,
                                  double negative_slope) {
  static constexpr const char* op = "linear_max_forward_cpu";
  linear_max_check_inputs(x, weight, scale, shift, negative_slope, c10::DeviceType::CPU, op);
  at::Tensor out = at::empty({x.size(0), weight.size(0)}, x.options());
  at::Tensor argmax = at::empty({x.size(0), weight.size(0)}, x.options().dtype(at::kLong));
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), op, [&] {
    forward_impl<scalar_t>(x, weight, scale, shift, static_cast<scalar_t>(negative_slope), out, argmax);
  });
  return {out, argmax};
}

TensorQuad linear_max_backward_cpu(const at::Tensor& grad_out, const at::Tensor& x,
                                   const at::Tensor& weight, const at::Tensor& scale,
                                   const at::Tensor& shift, const at::Tensor& argmax,
                                   double negative_slope) {
  static constexpr const char* op = "linear_max_backward_cpu";
  linear_max_check_backward(grad_out, x, weight, scale, shift, argmax, negative_slope, c10::DeviceType::CPU, op);
  at::Tensor grad_x = at::zeros_like(x);
  at::Tensor grad_w = at::zeros_like(weight);
  at::Tensor grad_scale = at::zeros_like(scale);
  at::Tensor grad_shift = at::zeros_like(shift);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), op, [&] {
    backward_impl<scalar_t>(grad_out, x, weight, scale, shift, argmax, static_cast<scalar_t>(negative_slope),
                            grad_x, grad_w, grad_scale, grad_shift);
  });
  return {grad_x, grad_w, grad_scale, grad_shift};
}

}  // namespace flowam
