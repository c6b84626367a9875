// sppquant: the rows kernel's launch (v9; kernel and design in spp_rows.cu, plan in spp_plan.cpp).
#ifndef SPPQUANT_SPP_ROWS_H
#define SPPQUANT_SPP_ROWS_H

#include "spp_plan.h"

#include <cuda_runtime.h>

namespace sppq {

// Launches the rows kernel of a kRows plan (l.rows, l.vec, l.grid, l.smem) for dtype on stream s.
int launch_rows(const void* in, void* out, int dtype, const SppLaunch& l, cudaStream_t s);

}  // namespace sppq

#endif  // SPPQUANT_SPP_ROWS_H
