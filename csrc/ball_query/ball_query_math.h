// Per-element pieces of the ball query shared by the CPU loop and the CUDA kernel; the
// squared distance is FPS's (fps/fps_math.h), under the same no-FMA rule.
//
// A group is the first nsample points, in index order, with d2 <= r2: the public rule (mask
// d2 > r2 out, sort the indices, take nsample), found by one scan that stops at nsample hits.
// A group with fewer hits repeats its first hit. A centroid with no point within the radius
// (possible only for centroids that are not points of the cloud) gets its nearest point,
// ties to the smaller index, in every slot: always a valid index, never the public code's N.
#pragma once
#include "fps/fps_math.h"

namespace flowam {

// The squared radius in the points' dtype: radius * radius in double, rounded once (as a
// Python float compared with a tensor of that dtype is).
template <typename scalar_t>
FLOWAM_HD scalar_t ball_sq_radius(double radius) {
  return static_cast<scalar_t>(radius * radius);
}

// The nearest point so far, for a centroid whose ball is empty: ties to the smaller index.
template <typename scalar_t, typename index_t>
FLOWAM_HD bool ball_nearer(scalar_t d1, index_t i1, scalar_t d2, index_t i2) {
  return (d1 < d2) | ((d1 == d2) & (i1 < i2));
}

}  // namespace flowam
