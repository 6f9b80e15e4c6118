// Quantile flow alignment on the CPU: per (sample, channel) row, the squared 1-D Wasserstein-2
// distance between the row's N values and the class's quantile function (Q stored levels) read
// at the N levels by linear interpolation (DESIGN.md, "Faithfulness"). Sorting is the whole
// cost, so each row is sorted once, by an LSD radix sort on the values' order-preserving bit
// patterns (float32; 4 byte passes, a pass skipped where every value shares its byte), and the
// forward writes the gradient's coefficients as it goes: the backward is then one multiply,
// where autograd's sort backward would scatter. Rows are independent and every sum runs in a
// fixed order, so results do not depend on the thread count. Points-last activations (B, N, C),
// as the fast paths make them, are read in place: a row is gathered into a local buffer (the
// rows of one sample are taken channel after channel, so each gather hits the cache lines the
// last one loaded) and its gradient scattered back the same way.
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

// Where row r = (b, c) of acts starts: its values sit at acts[b][c][i] (stride 1), or at
// acts[b][i][c] (stride channels) when points_last.
inline int64_t row_start(int64_t r, int64_t channels, int64_t n, bool points_last) {
  return points_last ? (r / channels) * n * channels + r % channels : r * n;
}

template <typename T>
void gather_row(const T* src, int64_t n, int64_t stride, T* vals) {
  for (int64_t i = 0; i < n; ++i) vals[i] = src[i * stride];
}

// Row r = (b, c) of acts against row (labels[b], c) of the class tables.
template <typename T>
void quantile_rows(const T* acts, const int64_t* labels, const T* quantiles, const T* inv_s, int64_t rows,
                   int64_t channels, int64_t n, int64_t q, double coef, bool points_last, double* row_loss,
                   T* grad) {
  const LevelMap map(n, q);
  const int64_t stride = points_last ? channels : 1;
  at::parallel_for(0, rows, 16, [&](int64_t r0, int64_t r1) {
    RowSorter sorter;
    std::vector<int32_t> order(n);
    std::vector<T> vals(n), gvals(n);
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t row_k = labels[r / channels] * channels + r % channels;
      const int64_t start = row_start(r, channels, n, points_last);
      gather_row(acts + start, n, stride, vals.data());
      const T* a = vals.data();
      const T* qk = quantiles + row_k * q;
      T* g = gvals.data();
      const double is = static_cast<double>(inv_s[row_k]);
      sorter.order(a, n, order.data());
      double sum = 0.0;
      for (int64_t i = 0; i < n; ++i) {
        const int32_t j = order[i];
        const double w = map.w[i];
        const double t = static_cast<double>(qk[map.lo[i]]) * (1.0 - w) + static_cast<double>(qk[map.hi[i]]) * w;
        const double d = (static_cast<double>(a[j]) - t) * is;
        sum += d * d;
        g[j] = static_cast<T>(coef * d * is);  // d(loss)/d(a_j): 2 (a_j - t_i) / s^2, over N C
      }
      T* dst = grad + start;
      for (int64_t i = 0; i < n; ++i) dst[i * stride] = g[i];
      row_loss[r] = sum;
    }
  });
}

template <typename T>
void sort_rows(const T* acts, int64_t rows, int64_t channels, int64_t n, bool points_last, T* out) {
  const int64_t stride = points_last ? channels : 1;
  at::parallel_for(0, rows, 16, [&](int64_t r0, int64_t r1) {
    RowSorter sorter;
    std::vector<int32_t> order(n);
    std::vector<T> vals(n);
    for (int64_t r = r0; r < r1; ++r) {
      gather_row(acts + row_start(r, channels, n, points_last), n, stride, vals.data());
      sorter.order(vals.data(), n, order.data());
      T* dst = out + r * n;
      for (int64_t i = 0; i < n; ++i) dst[i] = vals[order[i]];
    }
  });
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
    sort_rows<scalar_t>(acts.data_ptr<scalar_t>(), B * C, C, N, points_last, out.data_ptr<scalar_t>());
  });
  return out;
}

std::vector<at::Tensor> quantile_align_forward_cpu(const at::Tensor& acts, const at::Tensor& labels,
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
                            inv_scale.data_ptr<scalar_t>(), B * C, C, N, quantiles.size(2), coef, points_last,
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
