// Sorting a row's words (order key << 32 | point index) with an AVX-512 bitonic network. For the
// rows the quantile kernels sort (a few hundred to a thousand points) the radix sort's work is
// mostly its four 256-bucket prefix sums and its dependent scatters; the network is branch-free
// 8-lane min/max. The words are distinct (the index rides in them), so the network gives exactly
// the radix sort's order, and results do not depend on which of the two ran.
#pragma once

#include <cstdint>

#if defined(__AVX512F__)
#include <immintrin.h>

#define FLOWAM_HAVE_BITONIC 1

// GCC 12's unmasked AVX-512 min/max/permute intrinsics start from a self-initialized "undefined"
// vector, which -Wmaybe-uninitialized reports at every inlined use.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

namespace flowam {
namespace bitonic {

// Rows of up to this many words go through the network (padded to a power of two, at least
// kMinWords); longer ones through the radix sort, whose cost grows as n where the network's
// grows as n log^2 n.
constexpr int64_t kMaxWords = 1024;
constexpr int64_t kMinWords = 64;

// Lanes l with l & j set: the upper element of each pair at lane stride j.
inline __mmask8 upper_lanes(int j) { return j == 1 ? 0xAA : (j == 2 ? 0xCC : 0xF0); }

// One compare-exchange stage inside a vector, lane l against lane l ^ j (perm holds l ^ j);
// lanes in take_max keep the larger word.
inline __m512i exchange_lanes(__m512i v, __m512i perm, __mmask8 take_max) {
  const __m512i p = _mm512_permutexvar_epi64(perm, v);
  return _mm512_mask_blend_epi64(take_max, _mm512_min_epu64(v, p), _mm512_max_epu64(v, p));
}

struct LanePerms {
  __m512i x1, x2, x4;
  LanePerms() {
    const __m512i lane = _mm512_set_epi64(7, 6, 5, 4, 3, 2, 1, 0);
    x1 = _mm512_xor_si512(lane, _mm512_set1_epi64(1));
    x2 = _mm512_xor_si512(lane, _mm512_set1_epi64(2));
    x4 = _mm512_xor_si512(lane, _mm512_set1_epi64(4));
  }
};

// The lane strides 4, 2, 1 of a merge whose direction is the same in every lane (descending
// when desc): the end of every merge of 16 or more words, and of the 8-word one.
inline __m512i finish_merge(__m512i v, const LanePerms& p, bool desc) {
  const __mmask8 d = desc ? 0xFF : 0x00;
  v = exchange_lanes(v, p.x4, upper_lanes(4) ^ d);
  v = exchange_lanes(v, p.x2, upper_lanes(2) ^ d);
  return exchange_lanes(v, p.x1, upper_lanes(1) ^ d);
}

inline __mmask8 all_lanes_if(bool b) { return b ? 0xFF : 0x00; }

// Word i of a merge of size k (16 or more) runs descending where i & k is set; the 8 words of a
// vector share it.
inline bool descending(int64_t vec, int64_t k) { return ((8 * vec) & k) != 0; }

// One stage j (8 or more) of the merge of size k between the vectors of w, through memory.
inline void exchange_vectors(uint64_t* w, int64_t vecs, int64_t j, int64_t k) {
  const int64_t jv = j / 8;
  for (int64_t a = 0; a < vecs; ++a) {
    if (a & jv) continue;
    const __m512i x = _mm512_loadu_si512(w + 8 * a), y = _mm512_loadu_si512(w + 8 * (a | jv));
    const __mmask8 d = all_lanes_if(descending(a, k));
    const __m512i lo = _mm512_min_epu64(x, y), hi = _mm512_max_epu64(x, y);
    _mm512_storeu_si512(w + 8 * a, _mm512_mask_blend_epi64(d, lo, hi));
    _mm512_storeu_si512(w + 8 * (a | jv), _mm512_mask_blend_epi64(d, hi, lo));
  }
}

// The stages j = j_first .. 8 between vectors, then the lane stages, of the merge of size k on
// a block of 8 vectors held in registers, r[0] being the row's vector `base`.
inline void merge_block(__m512i* r, int64_t base, int64_t k, int64_t j_first, const LanePerms& p) {
  for (int jv = 4; jv >= 1; jv /= 2) {
    if (8 * jv > j_first) continue;
    for (int a = 0; a < 8; ++a) {
      if (a & jv) continue;
      const __mmask8 d = all_lanes_if(descending(base + a, k));
      const __m512i lo = _mm512_min_epu64(r[a], r[a | jv]), hi = _mm512_max_epu64(r[a], r[a | jv]);
      r[a] = _mm512_mask_blend_epi64(d, lo, hi);
      r[a | jv] = _mm512_mask_blend_epi64(d, hi, lo);
    }
  }
  for (int v = 0; v < 8; ++v) r[v] = finish_merge(r[v], p, descending(base + v, k));
}

// A vector's 8 words sorted, ascending for even vectors, descending for odd ones (the first
// stages of the 16-word merges). Merges of 2 and 4 words alternate direction inside a vector:
// lanes with bit 1, then bit 2, run descending.
inline __m512i sort_vector(__m512i x, const LanePerms& p, int64_t vec) {
  x = exchange_lanes(x, p.x1, upper_lanes(1) ^ 0xCC);
  x = exchange_lanes(x, p.x2, upper_lanes(2) ^ 0xF0);
  x = exchange_lanes(x, p.x1, upper_lanes(1) ^ 0xF0);
  return finish_merge(x, p, (vec & 1) != 0);
}

// Sorts w[0..size) ascending in place; size a power of two, at least 64. Merges up to 64 words run
// on blocks of 8 vectors in registers; a larger merge's stages between blocks go through
// memory, one stage a pass, and its last three stages between vectors in registers again.
inline void sort_words(uint64_t* w, int64_t size) {
  const LanePerms p;
  const int64_t vecs = size / 8;
  __m512i r[8];
  for (int64_t base = 0; base < vecs; base += 8) {
    for (int v = 0; v < 8; ++v) r[v] = sort_vector(_mm512_loadu_si512(w + 8 * (base + v)), p, base + v);
    for (int64_t k = 16; k <= 64; k *= 2) merge_block(r, base, k, k / 2, p);
    for (int v = 0; v < 8; ++v) _mm512_storeu_si512(w + 8 * (base + v), r[v]);
  }
  for (int64_t k = 128; k <= size; k *= 2) {
    for (int64_t j = k / 2; j >= 64; j /= 2) exchange_vectors(w, vecs, j, k);
    for (int64_t base = 0; base < vecs; base += 8) {
      for (int v = 0; v < 8; ++v) r[v] = _mm512_loadu_si512(w + 8 * (base + v));
      merge_block(r, base, k, 32, p);
      for (int v = 0; v < 8; ++v) _mm512_storeu_si512(w + 8 * (base + v), r[v]);
    }
  }
}

}  // namespace bitonic
}  // namespace flowam

#pragma GCC diagnostic pop
#endif  // __AVX512F__
