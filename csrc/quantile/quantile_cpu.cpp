// Quantile flow alignment on the CPU: per (sample, channel) row, the squared 1-D Wasserstein-2
// distance between the row's N values and the class's quantile function (Q stored levels) read
// at the N levels by linear interpolation (docs/design.md, "Faithfulness"). Sorting is most of the
// cost, so each row is sorted once: float32 rows of up to 1024 points by an AVX-512 bitonic
// network where the compiler targets AVX-512 (bitonic_sort.h), others by an LSD radix sort on
// the values' order-preserving bit patterns (4 byte passes, a pass skipped where every value
// shares its byte); the two give the same order. The forward writes the gradient's
// coefficients as it goes: the backward is then one multiply, where autograd's sort backward
// would scatter. Rows are independent and every sum runs in a fixed order, so results do not
// depend on the thread count. Points-last activations (B, N, C), as the fast paths make them,
// are read in place: a tile of channels is gathered into a local buffer, one point (one cache
// line) at a time, and its gradient scattered back the same way.
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <numeric>
#include <vector>

#include "ops.h"
#include "quantile/bitonic_sort.h"
#include "quantile/quantile_checks.h"

namespace flowam {
namespace {

// Unsigned keys that sort as the floats do (finite values; the front end refuses NaN).
inline uint32_t order_key(float v) {
  uint32_t u;
  std::memcpy(&u, &v, sizeof u);
  return u ^ ((u >> 31) ? 0xFFFFFFFFu : 0x80000000u);
}

// order[i] = the index of the i-th smallest of a[0..n), equal values in index order.
struct RowSorter {
  std::vector<uint64_t> buf, tmp;

  void order(const float* a, int64_t n, int32_t* order) {
#if defined(FLOWAM_HAVE_BITONIC)
    if (n <= bitonic::kMaxWords) {
      network_order(a, n, order);
      return;
    }
#endif
    buf.resize(n);
    tmp.resize(n);
    uint32_t hist[4][256] = {};
    for (int64_t i = 0; i < n; ++i) {
      const uint32_t k = order_key(a[i]);
      buf[i] = (uint64_t(k) << 32) | uint32_t(i);  // the index rides below the key
      for (int p = 0; p < 4; ++p) ++hist[p][(k >> (8 * p)) & 255u];
    }
    uint64_t* src = buf.data();
    uint64_t* dst = tmp.data();
    for (int p = 0; p < 4; ++p) {
      const int shift = 32 + 8 * p;
      if (hist[p][(src[0] >> shift) & 255u] == uint32_t(n)) continue;  // one digit: nothing moves
      uint32_t offset[256];
      uint32_t run = 0;
      for (int d = 0; d < 256; ++d) {
        offset[d] = run;
        run += hist[p][d];
      }
      for (int64_t i = 0; i < n; ++i) dst[offset[(src[i] >> shift) & 255u]++] = src[i];
      std::swap(src, dst);
    }
    for (int64_t i = 0; i < n; ++i) order[i] = int32_t(src[i] & 0xFFFFFFFFu);
  }

#if defined(FLOWAM_HAVE_BITONIC)
  void network_order(const float* a, int64_t n, int32_t* order) {
    int64_t size = bitonic::kMinWords;
    while (size < n) size *= 2;
    buf.resize(size);
    for (int64_t i = 0; i < n; ++i) buf[i] = (uint64_t(order_key(a[i])) << 32) | uint32_t(i);
    // Padding sorts last: a real word's index is below 2^31.
    for (int64_t i = n; i < size; ++i) buf[i] = ~uint64_t(0);
    bitonic::sort_words(buf.data(), size);
    for (int64_t i = 0; i < n; ++i) order[i] = int32_t(buf[i] & 0xFFFFFFFFu);
  }
#endif

  // float64 (tests, gradcheck): a stable comparison sort, the same order as the radix sort's.
  void order(const double* a, int64_t n, int32_t* order) {
    std::iota(order, order + n, 0);
    std::stable_sort(order, order + n, [a](int32_t x, int32_t y) { return a[x] < a[y]; });
  }
};

// Where the cloud's N levels (i + 0.5) / N fall on the Q stored levels (j + 0.5) / Q: between
// stored levels lo and hi with weight w on hi (constant beyond the first and last level), as
// resample_quantiles reads them.
struct LevelMap {
  std::vector<int32_t> lo, hi;
  std::vector<double> w;

  LevelMap(int64_t n, int64_t q) : lo(n), hi(n), w(n) {
    for (int64_t i = 0; i < n; ++i) {
      const double pos = std::min(std::max((double(i) + 0.5) / double(n) * double(q) - 0.5, 0.0), double(q - 1));
      lo[i] = int32_t(std::min<int64_t>(int64_t(std::floor(pos)), q - 1));
      hi[i] = int32_t(std::min<int64_t>(lo[i] + 1, q - 1));
      w[i] = pos - double(lo[i]);
    }
  }
};

// Rows are taken a tile of up to kTile channels of one sample at a time. Points-last, the
// tile's values at one point share a cache line, so gathering the tile (and scattering its
// gradient back) reads each line once, where gathering row by row strides through the sample's
// whole (N, C) block once per channel.
constexpr int64_t kTile = 16;

// The tile's rows (channels c0..c0+nc of sample b) into vals[cc * n + i].
template <typename T>
void gather_tile(const T* acts, int64_t b, int64_t c0, int64_t nc, int64_t channels, int64_t n, bool points_last,
                 T* vals) {
  if (!points_last) {
    std::memcpy(vals, acts + (b * channels + c0) * n, sizeof(T) * nc * n);
    return;
  }
  const T* src = acts + b * n * channels + c0;
  for (int64_t i = 0; i < n; ++i, src += channels)
    for (int64_t cc = 0; cc < nc; ++cc) vals[cc * n + i] = src[cc];
}

// The inverse of gather_tile: vals[cc * n + i] back to the tile's place in a tensor shaped as acts.
template <typename T>
void scatter_tile(const T* vals, int64_t b, int64_t c0, int64_t nc, int64_t channels, int64_t n, bool points_last,
                  T* out) {
  if (!points_last) {
    std::memcpy(out + (b * channels + c0) * n, vals, sizeof(T) * nc * n);
    return;
  }
  T* dst = out + b * n * channels + c0;
  for (int64_t i = 0; i < n; ++i, dst += channels)
    for (int64_t cc = 0; cc < nc; ++cc) dst[cc] = vals[cc * n + i];
}

// One thread's buffers for the rows of its tiles.
struct RowWork {
  RowSorter sorter;
  std::vector<int32_t> order;
  std::vector<double> target;
  explicit RowWork(int64_t n) : order(n), target(n) {}
};

// Calls f(work, b, c0, nc, vals, scratch) for every tile of rows of acts (`samples` samples of
// `channels` rows), in parallel over tiles; vals holds the tile's rows gathered, scratch as
// much room again.
template <typename T, typename F>
void for_each_tile(const T* acts, int64_t samples, int64_t channels, int64_t n, bool points_last, const F& f) {
  const int64_t per_sample = (channels + kTile - 1) / kTile;
  at::parallel_for(0, samples * per_sample, 1, [&](int64_t t0, int64_t t1) {
    RowWork work(n);
    std::vector<T> vals(kTile * n), scratch(kTile * n);
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t b = t / per_sample, c0 = (t % per_sample) * kTile, nc = std::min(kTile, channels - c0);
      gather_tile(acts, b, c0, nc, channels, n, points_last, vals.data());
      f(work, b, c0, nc, vals.data(), scratch.data());
    }
  });
}

// Row r = (b, c) of acts against row (labels[b], c) of the class tables.
template <typename T>
void quantile_rows(const T* acts, const int64_t* labels, const T* quantiles, const T* inv_s, int64_t samples,
                   int64_t channels, int64_t n, int64_t q, double coef, bool points_last, double* row_loss,
                   T* grad) {
  const LevelMap map(n, q);
  auto rows = [&](RowWork& work, int64_t b, int64_t c0, int64_t nc, T* vals, T* gvals) {
    int32_t* order = work.order.data();
    double* target = work.target.data();
    for (int64_t cc = 0; cc < nc; ++cc) {
      const int64_t row_k = labels[b] * channels + c0 + cc;
      const T* a = vals + cc * n;
      const T* qk = quantiles + row_k * q;
      T* g = gvals + cc * n;
      const double is = static_cast<double>(inv_s[row_k]);
      for (int64_t i = 0; i < n; ++i) {
        const double w = map.w[i];
        target[i] = static_cast<double>(qk[map.lo[i]]) * (1.0 - w) + static_cast<double>(qk[map.hi[i]]) * w;
      }
      work.sorter.order(a, n, order);
      double sum = 0.0;
      for (int64_t i = 0; i < n; ++i) {
        const int32_t j = order[i];
        const double d = (static_cast<double>(a[j]) - target[i]) * is;
        sum += d * d;
        g[j] = static_cast<T>(coef * d * is);  // d(loss)/d(a_j): 2 (a_j - t_i) / s^2, over N C
      }
      row_loss[b * channels + c0 + cc] = sum;
    }
    scatter_tile(gvals, b, c0, nc, channels, n, points_last, grad);
  };
  for_each_tile(acts, samples, channels, n, points_last, rows);
}

template <typename T>
void sort_rows(const T* acts, int64_t samples, int64_t channels, int64_t n, bool points_last, T* out) {
  auto rows = [&](RowWork& work, int64_t b, int64_t c0, int64_t nc, T* vals, T*) {
    for (int64_t cc = 0; cc < nc; ++cc) {
      const T* a = vals + cc * n;
      work.sorter.order(a, n, work.order.data());
      T* dst = out + (b * channels + c0 + cc) * n;
      for (int64_t i = 0; i < n; ++i) dst[i] = a[work.order[i]];
    }
  };
  for_each_tile(acts, samples, channels, n, points_last, rows);
}

}  // namespace

at::Tensor quantile_sort_cpu(const at::Tensor& acts, bool points_last) {
  constexpr const char* op = "quantile_sort_cpu";
  check_float_dense(acts, "acts", 3, c10::DeviceType::CPU, op);
  const int64_t B = acts.size(0), C = acts.size(points_last ? 2 : 1), N = acts.size(points_last ? 1 : 2);
  TORCH_CHECK(N > 0, op, ": acts has no points (shape ", acts.sizes(), ")");
  TORCH_CHECK(N < (int64_t(1) << 31), op, ": acts has ", N, " points, above 2^31 - 1");
  auto out = at::empty({B, C, N}, acts.options());
  AT_DISPATCH_FLOATING_TYPES(acts.scalar_type(), op, [&] {
    sort_rows<scalar_t>(acts.data_ptr<scalar_t>(), B, C, N, points_last, out.data_ptr<scalar_t>());
  });
  return out;
}

TensorPair quantile_align_forward_cpu(const at::Tensor& acts, const at::Tensor& labels,
                                      const at::Tensor& quantiles, const at::Tensor& inv_scale,
                                      bool points_last) {
  constexpr const char* op = "quantile_align_forward_cpu";
  quantile_check_forward(acts, labels, quantiles, inv_scale, points_last, c10::DeviceType::CPU, op);
  const int64_t B = acts.size(0), C = acts.size(points_last ? 2 : 1), N = acts.size(points_last ? 1 : 2);
  auto grad = at::empty_like(acts);
  auto row_loss = at::empty({B * C}, acts.options().dtype(at::kDouble));
  auto loss = at::empty({B}, acts.options());
  const double coef = 2.0 / static_cast<double>(N * C);
  AT_DISPATCH_FLOATING_TYPES(acts.scalar_type(), op, [&] {
    quantile_rows<scalar_t>(acts.data_ptr<scalar_t>(), labels.data_ptr<int64_t>(), quantiles.data_ptr<scalar_t>(),
                            inv_scale.data_ptr<scalar_t>(), B, C, N, quantiles.size(2), coef, points_last,
                            row_loss.data_ptr<double>(), grad.data_ptr<scalar_t>());
    const double* rl = row_loss.data_ptr<double>();
    scalar_t* out = loss.data_ptr<scalar_t>();
    for (int64_t b = 0; b < B; ++b) {
      double s = 0.0;
      for (int64_t c = 0; c < C; ++c) s += rl[b * C + c];
      out[b] = static_cast<scalar_t>(s / static_cast<double>(N * C));
    }
  });
  return {loss, grad};
}

}  // namespace flowam
