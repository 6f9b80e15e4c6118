// Per-element step of the gather-max over neighbours, shared by the CPU loop and the CUDA
// kernel: a strict ">" keeps the first neighbour (in idx order) among equal values.
// Written once for scalars and for GCC/Clang vector types (the CPU loop runs it on whole
// vectors, where the comparison yields a lane mask).
#pragma once
#include "hd.h"

namespace flowam {

template <typename value_t, typename slot_t>
FLOWAM_HD void edge_max_step(value_t v, slot_t slot, value_t& best, slot_t& best_slot) {
  const auto take = v > best;
  best = take ? v : best;
  best_slot = take ? slot : best_slot;
}

}  // namespace flowam
