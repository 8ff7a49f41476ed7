// The CUDA built-ins that lrp's kernels use, defined on the host, so that the same `.cu` sources
// compile as C++ and run on the CPU (the emulated device of `lrp_runtime::gpu`).
//
// A launch runs the grid's blocks, and each block's threads, one after another on the calling
// thread. That is exact for lrp's kernels because none of them shares memory between threads or
// synchronises: every thread writes its own elements (grid-stride loops). Kernels must keep it so:
// no `__shared__`, no `__syncthreads`, no atomics.
#pragma once
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <utility>

struct dim3 {
    unsigned x = 1, y = 1, z = 1;
};

namespace lrp_emu {
// The geometry of the running launch and the current thread's place in it.
inline thread_local dim3 block_idx, thread_idx, block_dim, grid_dim;

// A launch's geometry as Rust passes it (`gpu::launch::Grid`).
struct Launch {
    unsigned grid[3];
    unsigned block[3];
};

template <class... A, std::size_t... I>
void call(void (*kernel)(A...), void** args, std::index_sequence<I...>) {
    kernel(*static_cast<A*>(args[I])...);
}

// Runs `kernel` once per thread of the grid; `args[i]` points at the i-th argument's value, as
// cuLaunchKernel's `kernelParams` do.
template <class... A>
void run(const Launch& l, void (*kernel)(A...), void** args) {
    grid_dim = dim3{l.grid[0], l.grid[1], l.grid[2]};
    block_dim = dim3{l.block[0], l.block[1], l.block[2]};
    for (unsigned bz = 0; bz < l.grid[2]; ++bz)
        for (unsigned by = 0; by < l.grid[1]; ++by)
            for (unsigned bx = 0; bx < l.grid[0]; ++bx)
                for (unsigned tz = 0; tz < l.block[2]; ++tz)
                    for (unsigned ty = 0; ty < l.block[1]; ++ty)
                        for (unsigned tx = 0; tx < l.block[0]; ++tx) {
                            block_idx = dim3{bx, by, bz};
                            thread_idx = dim3{tx, ty, tz};
                            call(kernel, args, std::index_sequence_for<A...>{});
                        }
}
}  // namespace lrp_emu

#define __global__
#define __device__
#define __forceinline__ inline
#define __restrict__ __restrict
#define blockIdx (::lrp_emu::block_idx)
#define threadIdx (::lrp_emu::thread_idx)
#define blockDim (::lrp_emu::block_dim)
#define gridDim (::lrp_emu::grid_dim)

using std::fabs;
using std::fmax;
using std::fmin;
