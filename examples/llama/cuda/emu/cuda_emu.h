// A small host emulator of the CUDA subset the LLaMa kernels use, so the
// same .cu sources run on the CPU in the tests (see kernels_emu.cpp).
//
// Execution model: a launch runs on the calling thread, synchronously (the
// stream is ignored), blocks one after another, so static storage is the
// running block's shared memory. Each of the block's blockDim threads is a
// fiber (ucontext) with its own stack: the fibers run one at a time until
// each reaches __syncthreads or returns, and when all have, the barrier
// opens and the next round starts. A returned thread no longer counts for
// the barrier, as exited threads on the device. One OS thread switching
// fibers is tens of times cheaper than an OS thread per CUDA thread
// meeting at a condition variable, and leaves nothing to race.
//
// A kernel that reads shared memory another thread writes without a
// barrier in between gets a stale value when the reader runs first. Each
// round runs the fibers in a fresh pseudo-random order (a fixed function of
// the launch count, block and round, so runs repeat exactly), so a missing
// barrier shows in the results instead of hiding behind one lucky order.
//
// Launches from several host threads are serialised by one mutex. Under
// AddressSanitizer and ThreadSanitizer every switch is announced to the
// sanitizer (their fiber interfaces), so both follow the stacks.
// AddressSanitizer still prints, once, that it does not fully support
// swapcontext: its interceptor clears the shadow of the stacks switched
// to, which can hide an error on a fiber's stack but not invent one.
#ifndef LLAMA_CUDA_EMU_H
#define LLAMA_CUDA_EMU_H

#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <mutex>
#include <vector>

#include <sys/mman.h>
#include <ucontext.h>

#if defined(__SANITIZE_ADDRESS__)
#define LK_EMU_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define LK_EMU_ASAN 1
#endif
#endif
#if defined(__SANITIZE_THREAD__)
#define LK_EMU_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define LK_EMU_TSAN 1
#endif
#endif
#ifdef LK_EMU_ASAN
#include <sanitizer/common_interface_defs.h>
#endif
#ifdef LK_EMU_TSAN
#include <sanitizer/tsan_interface.h>
#endif

#define __global__
#define __device__ inline
#define __host__
#define __forceinline__
#define __shared__ static

// cudaStream_t, cudaError_t, the error codes and the last-error calls.
#include "cuda_runtime_emu.h"

struct dim3 {
    unsigned x, y, z;
    dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1)
        : x(x_), y(y_), z(z_) {}
};

// The launching OS thread runs every fiber of its launch, so thread-local
// built-ins are the running CUDA thread's (the scheduler sets them before
// each switch).
inline thread_local dim3 threadIdx(0, 0, 0);
inline thread_local dim3 blockIdx(0, 0, 0);
inline thread_local dim3 blockDim;
inline thread_local dim3 gridDim;

inline float __uint_as_float(uint32_t u)
{
    float f;
    std::memcpy(&f, &u, sizeof f);
    return f;
}
inline uint32_t __float_as_uint(float f)
{
    uint32_t u;
    std::memcpy(&u, &f, sizeof u);
    return u;
}
inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }

namespace emu {

class Device {
public:
    ~Device()
    {
        for (auto &f : fibers_) {
            munmap(f->map, f->map_bytes);
#ifdef LK_EMU_TSAN
            if (f->tsan)
                __tsan_destroy_fiber(f->tsan);
#endif
        }
    }

    // Runs the kernel over the grid; 0, or cudaErrorLaunchFailure when a
    // fiber stack cannot be had.
    int launch(dim3 grid, dim3 block, const std::function<void()> &kernel)
    {
        std::lock_guard<std::mutex> lk(mu_);
        const unsigned n = block.x * block.y * block.z;
        if (n == 0 || grid.x * grid.y * grid.z == 0)
            return 0;
        while (fibers_.size() < n)
            if (!add_fiber())
                return cudaErrorLaunchFailure;
        kernel_ = &kernel;
        launches_++;
        blockDim = block;
        gridDim = grid;
        unsigned linear = 0;
        for (unsigned z = 0; z < grid.z; z++)
            for (unsigned y = 0; y < grid.y; y++)
                for (unsigned x = 0; x < grid.x; x++, linear++) {
                    blockIdx = dim3(x, y, z);
                    run_block(block, n, linear);
                }
        kernel_ = nullptr;
        threadIdx = dim3(0, 0, 0);
        return 0;
    }

    // __syncthreads: back to the scheduler until every live thread of the
    // block is waiting too. Outside a kernel it does nothing.
    void barrier()
    {
        if (!in_fiber_)
            return;
        to_scheduler(*fibers_[current_]);
    }

private:
    struct Fiber {
        ucontext_t ctx;
        void *map = nullptr;   // guard page + stack
        size_t map_bytes = 0;
        char *stack = nullptr; // usable stack (above the guard page)
        dim3 tid;
        bool done = false;
        void *fake_stack = nullptr; // AddressSanitizer's, while suspended
        void *tsan = nullptr;       // ThreadSanitizer's fiber
    };

    static constexpr size_t kStackBytes = 256 * 1024;
    static constexpr size_t kGuardBytes = 4096;

    bool add_fiber()
    {
        std::unique_ptr<Fiber> f(new Fiber);
        f->map_bytes = kStackBytes + kGuardBytes;
        f->map = mmap(nullptr, f->map_bytes, PROT_READ | PROT_WRITE,
                      MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (f->map == MAP_FAILED)
            return false;
        // A stack overflow faults on the guard page instead of corrupting
        // the neighbour.
        mprotect(f->map, kGuardBytes, PROT_NONE);
        f->stack = static_cast<char *>(f->map) + kGuardBytes;
        prepare(*f);
#ifdef LK_EMU_TSAN
        f->tsan = __tsan_create_fiber(0);
#endif
        fibers_.push_back(std::move(f));
        return true;
    }

    void run_block(dim3 block, unsigned n, unsigned linear)
    {
        for (unsigned i = 0; i < n; i++) {
            Fiber &f = *fibers_[i];
            f.tid = dim3(i % block.x, i / block.x % block.y,
                         i / (block.x * block.y));
            f.done = false;
        }
        unsigned live = n;
        order_.resize(n);
        for (unsigned round = 0; live > 0; round++) {
            shuffle(n, mix(mix(launches_) ^ linear) ^ round);
            for (unsigned k = 0; k < n; k++) {
                unsigned i = order_[k];
                if (fibers_[i]->done)
                    continue;
                resume(i);
                if (fibers_[i]->done)
                    live--;
            }
        }
    }

    // SplitMix64's finaliser: a well-mixed 64-bit function of x.
    static uint64_t mix(uint64_t x)
    {
        x += 0x9E3779B97F4A7C15ull;
        x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
        x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
        return x ^ (x >> 31);
    }

    // order_ = a permutation of 0..n-1 drawn from seed (Fisher-Yates).
    void shuffle(unsigned n, uint64_t seed)
    {
        for (unsigned i = 0; i < n; i++)
            order_[i] = i;
        for (unsigned i = n; i > 1; i--) {
            seed = mix(seed);
            unsigned j = (unsigned)(seed % i);
            unsigned t = order_[i - 1];
            order_[i - 1] = order_[j];
            order_[j] = t;
        }
    }

    // The fiber's context: entry() on its own stack. Kept out of line:
    // getcontext returns twice, which would make the compiler fear for the
    // caller's variables.
    __attribute__((noinline)) static void prepare(Fiber &f)
    {
        getcontext(&f.ctx);
        f.ctx.uc_stack.ss_sp = f.stack;
        f.ctx.uc_stack.ss_size = kStackBytes;
        f.ctx.uc_link = nullptr;
        makecontext(&f.ctx, &Device::entry, 0);
    }

    // Scheduler -> fiber i, until it waits at a barrier or returns.
    void resume(unsigned i)
    {
        Fiber &f = *fibers_[i];
        current_ = i;
        threadIdx = f.tid;
        in_fiber_ = true;
#ifdef LK_EMU_ASAN
        __sanitizer_start_switch_fiber(&main_fake_stack_, f.stack, kStackBytes);
#endif
#ifdef LK_EMU_TSAN
        main_tsan_ = __tsan_get_current_fiber();
        __tsan_switch_to_fiber(f.tsan, 0);
#endif
        swapcontext(&main_, &f.ctx);
#ifdef LK_EMU_ASAN
        __sanitizer_finish_switch_fiber(main_fake_stack_, nullptr, nullptr);
#endif
        in_fiber_ = false;
    }

    // Fiber -> scheduler; returns when the scheduler resumes this fiber.
    void to_scheduler(Fiber &f)
    {
#ifdef LK_EMU_ASAN
        __sanitizer_start_switch_fiber(&f.fake_stack, main_bottom_, main_size_);
#endif
#ifdef LK_EMU_TSAN
        __tsan_switch_to_fiber(main_tsan_, 0);
#endif
        swapcontext(&f.ctx, &main_);
#ifdef LK_EMU_ASAN
        __sanitizer_finish_switch_fiber(f.fake_stack, &main_bottom_,
                                        &main_size_);
#endif
    }

    static void entry();

    std::mutex mu_;
    std::vector<std::unique_ptr<Fiber>> fibers_;
    std::vector<unsigned> order_; // this round's running order
    uint64_t launches_ = 0;
    ucontext_t main_;
    const std::function<void()> *kernel_ = nullptr;
    unsigned current_ = 0;
    bool in_fiber_ = false;
#ifdef LK_EMU_ASAN
    void *main_fake_stack_ = nullptr; // the scheduler's, while a fiber runs
    const void *main_bottom_ = nullptr;
    size_t main_size_ = 0;
#endif
#ifdef LK_EMU_TSAN
    void *main_tsan_ = nullptr;
#endif
};

inline Device &device()
{
    static Device d;
    return d;
}

// A fiber's only frame: it runs its thread of the current block's kernel,
// reports done and waits to be resumed for the next block, forever. The
// fibers outlive every launch, so each is set up once and its frames
// always unwind (the sanitizers' view of its stack stays balanced).
inline void Device::entry()
{
    Device &d = device();
#ifdef LK_EMU_ASAN
    __sanitizer_finish_switch_fiber(nullptr, &d.main_bottom_, &d.main_size_);
#endif
    Fiber &f = *d.fibers_[d.current_];
    for (;;) {
        (*d.kernel_)();
        f.done = true;
        d.to_scheduler(f);
    }
}

} // namespace emu

inline void __syncthreads() { emu::device().barrier(); }

// Only one CUDA thread runs at a time and none is interrupted between its
// barriers, so a plain read-modify-write is atomic here.
inline float atomicAdd(float *p, float v)
{
    float old = *p;
    *p = old + v;
    return old;
}

// kernel<<<grid, block, 0, stream>>>(args...) in the .cu sources is written
// LK_LAUNCH(kernel, grid, block, stream, args...) (kcommon.cuh), which
// comes here: the kernel runs at once, and a failure (a fiber stack that
// cannot be had, or one the test asked for) becomes the thread's last
// error, as a failed launch does on the device.
#define LK_EMU_LAUNCH(kernel, grid, block, stream, ...)                        \
    do {                                                                       \
        (void)(stream);                                                        \
        int lk_emu_err_ = lk_emu_take_launch_failure();                        \
        if (!lk_emu_err_)                                                      \
            lk_emu_err_ = emu::device().launch(                                \
                (grid), (block), [&] { kernel(__VA_ARGS__); });                \
        lk_emu_record_error(lk_emu_err_);                                      \
    } while (0)

#endif // LLAMA_CUDA_EMU_H
