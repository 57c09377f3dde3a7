// A small host emulator of the CUDA subset the LLaMa kernels use, so the
// same .cu sources run on the CPU in the tests (see kernels_emu.cpp).
//
// Execution model: a launch runs its blocks one after another; the
// blockDim threads of a block run concurrently on a pool of std::threads
// that persists for the process, so __syncthreads is a real barrier and
// static storage is the running block's shared memory (no other block runs
// meanwhile). Launches are synchronous (the stream is ignored) and
// serialised process-wide by one mutex. A thread that returns from the
// kernel stops counting for the block's __syncthreads, as exited threads
// do on the device. Everything is synchronised with a mutex and condition
// variables, so the emulator itself is race-free under ThreadSanitizer.
#ifndef LLAMA_CUDA_EMU_H
#define LLAMA_CUDA_EMU_H

#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

#define __global__
#define __device__ inline
#define __host__
#define __forceinline__
#define __shared__ static

typedef void *cudaStream_t;
typedef int cudaError_t;
enum { cudaSuccess = 0, cudaErrorInvalidValue = 1 };
inline cudaError_t cudaGetLastError() { return cudaSuccess; }

struct dim3 {
    unsigned x, y, z;
    dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1)
        : x(x_), y(y_), z(z_) {}
};

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

// A barrier over a changing number of threads: wait() blocks until every
// participant has arrived; drop() leaves for good (the count shrinks).
// The generation counter tells a woken waiter that its phase completed.
class Barrier {
public:
    void reset(unsigned n)
    {
        std::lock_guard<std::mutex> lk(mu_);
        count_ = n;
        arrived_ = 0;
    }
    void wait()
    {
        std::unique_lock<std::mutex> lk(mu_);
        unsigned gen = gen_;
        if (++arrived_ >= count_) {
            next_phase();
            return;
        }
        cv_.wait(lk, [&] { return gen_ != gen; });
    }
    void drop()
    {
        std::lock_guard<std::mutex> lk(mu_);
        count_--;
        if (count_ > 0 && arrived_ >= count_)
            next_phase();
    }

private:
    void next_phase()
    {
        arrived_ = 0;
        gen_++;
        cv_.notify_all();
    }
    std::mutex mu_;
    std::condition_variable cv_;
    unsigned count_ = 0, arrived_ = 0, gen_ = 0;
};

// The worker pool. A job is one launch: worker i < threads-per-block runs
// thread i of every block in turn; after each block all of them meet at
// `between` so the next block starts on a quiet shared memory.
class Pool {
public:
    Barrier sync_; // __syncthreads of the running block

    ~Pool()
    {
        {
            std::lock_guard<std::mutex> lk(mu_);
            quit_ = true;
        }
        cv_.notify_all();
        for (auto &t : workers_)
            t.join();
    }

    void run(dim3 grid, dim3 block, const std::function<void()> &kernel)
    {
        unsigned nthreads = block.x * block.y * block.z;
        unsigned nblocks = grid.x * grid.y * grid.z;
        if (nthreads == 0 || nblocks == 0)
            return;
        std::unique_lock<std::mutex> lk(mu_);
        while (workers_.size() < nthreads) {
            unsigned id = (unsigned)workers_.size();
            workers_.emplace_back([this, id] { loop(id); });
        }
        grid_ = grid;
        block_ = block;
        nthreads_ = nthreads;
        kernel_ = &kernel;
        between_.reset(nthreads);
        sync_.reset(nthreads);
        remaining_ = nthreads;
        job_++;
        cv_.notify_all();
        done_cv_.wait(lk, [&] { return remaining_ == 0; });
        kernel_ = nullptr;
    }

private:
    void loop(unsigned id)
    {
        uint64_t seen = 0;
        for (;;) {
            dim3 grid, block;
            unsigned nthreads;
            const std::function<void()> *kernel;
            {
                std::unique_lock<std::mutex> lk(mu_);
                cv_.wait(lk, [&] { return quit_ || job_ != seen; });
                if (quit_)
                    return;
                seen = job_;
                grid = grid_;
                block = block_;
                nthreads = nthreads_;
                kernel = kernel_;
            }
            if (id < nthreads)
                run_blocks(id, grid, block, nthreads, *kernel);
        }
    }

    void run_blocks(unsigned id, dim3 grid, dim3 block, unsigned nthreads,
                    const std::function<void()> &kernel)
    {
        threadIdx = dim3(id % block.x, id / block.x % block.y,
                         id / (block.x * block.y));
        blockDim = block;
        gridDim = grid;
        for (unsigned z = 0; z < grid.z; z++)
            for (unsigned y = 0; y < grid.y; y++)
                for (unsigned x = 0; x < grid.x; x++) {
                    blockIdx = dim3(x, y, z);
                    kernel();
                    sync_.drop();
                    // The last thread to arrive rearms __syncthreads' barrier
                    // for the next block; nobody uses it meanwhile.
                    between_.wait_then([&] { sync_.reset(nthreads); });
                }
        std::lock_guard<std::mutex> lk(mu_);
        if (--remaining_ == 0)
            done_cv_.notify_all();
    }

    // The between-blocks barrier: as Barrier, plus an action the last
    // arriver runs before releasing the others.
    class Rendezvous {
    public:
        void reset(unsigned n)
        {
            std::lock_guard<std::mutex> lk(mu_);
            count_ = n;
            arrived_ = 0;
        }
        template <class F> void wait_then(F action)
        {
            std::unique_lock<std::mutex> lk(mu_);
            unsigned gen = gen_;
            if (++arrived_ == count_) {
                action();
                arrived_ = 0;
                gen_++;
                cv_.notify_all();
                return;
            }
            cv_.wait(lk, [&] { return gen_ != gen; });
        }

    private:
        std::mutex mu_;
        std::condition_variable cv_;
        unsigned count_ = 0, arrived_ = 0, gen_ = 0;
    };

    std::mutex mu_;
    std::condition_variable cv_, done_cv_;
    std::vector<std::thread> workers_;
    uint64_t job_ = 0;
    bool quit_ = false;
    dim3 grid_, block_;
    unsigned nthreads_ = 0, remaining_ = 0;
    const std::function<void()> *kernel_ = nullptr;
    Rendezvous between_;
};

inline std::mutex &launch_mutex()
{
    static std::mutex m;
    return m;
}

inline Pool &pool()
{
    static Pool p;
    return p;
}

inline std::mutex &atomic_mutex()
{
    static std::mutex m;
    return m;
}

inline void launch(dim3 grid, dim3 block, const std::function<void()> &kernel)
{
    std::lock_guard<std::mutex> lk(launch_mutex());
    pool().run(grid, block, kernel);
}

} // namespace emu

inline void __syncthreads() { emu::pool().sync_.wait(); }

inline float atomicAdd(float *p, float v)
{
    std::lock_guard<std::mutex> lk(emu::atomic_mutex());
    float old = *p;
    *p = old + v;
    return old;
}

// kernel<<<grid, block, 0, stream>>>(args...) in the .cu sources is written
// LK_LAUNCH(kernel, grid, block, stream, args...); here it runs at once.
#define LK_LAUNCH(kernel, grid, block, stream, ...)                            \
    do {                                                                       \
        (void)(stream);                                                        \
        emu::launch((grid), (block), [&] { kernel(__VA_ARGS__); });            \
    } while (0)

#endif // LLAMA_CUDA_EMU_H
