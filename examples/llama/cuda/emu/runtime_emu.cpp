// The emulator's runtime calls (cuda_runtime_emu.h): the thread's last
// error, stream queries and the test controls.
#include "cuda_runtime_emu.h"

#include <mutex>

namespace {

thread_local cudaError_t last_error = cudaSuccess;
thread_local cudaError_t next_launch_failure = cudaSuccess;

// Streams made to look busy: a handful at once is all a test needs.
struct busy_stream {
    cudaStream_t stream;
    int queries; // left to report cudaErrorNotReady
    cudaError_t then;
};
constexpr int kMaxBusy = 16;
busy_stream busy[kMaxBusy];
std::mutex busy_mu;

} // namespace

extern "C" {

void lk_emu_record_error(cudaError_t error)
{
    if (error != cudaSuccess)
        last_error = error;
}

cudaError_t cudaGetLastError(void)
{
    cudaError_t e = last_error;
    last_error = cudaSuccess;
    return e;
}

cudaError_t cudaPeekAtLastError(void) { return last_error; }

cudaError_t cudaStreamQuery(cudaStream_t stream)
{
    cudaError_t e = cudaSuccess;
    {
        std::lock_guard<std::mutex> lk(busy_mu);
        for (busy_stream &b : busy) {
            if (b.stream != stream || (b.queries == 0 && b.then == 0))
                continue;
            if (b.queries > 0) {
                b.queries--;
                e = cudaErrorNotReady;
            } else {
                e = b.then; // a failure stays
            }
            break;
        }
    }
    lk_emu_record_error(e);
    return e;
}

const char *cudaGetErrorString(cudaError_t error)
{
    switch (error) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorNotReady: return "device not ready";
    case cudaErrorLaunchFailure: return "unspecified launch failure";
    default: return "unrecognized error code";
    }
}

void lk_emu_stream_busy(cudaStream_t stream, int queries, cudaError_t then)
{
    std::lock_guard<std::mutex> lk(busy_mu);
    busy_stream *slot = nullptr;
    for (busy_stream &b : busy)
        if (b.stream == stream) {
            slot = &b;
            break;
        }
    if (!slot)
        for (busy_stream &b : busy)
            if (b.queries == 0 && b.then == 0) {
                slot = &b;
                break;
            }
    if (slot)
        *slot = busy_stream{stream, queries > 0 ? queries : 0, then};
}

void lk_emu_fail_next_launch(cudaError_t error)
{
    next_launch_failure = error;
}

cudaError_t lk_emu_take_launch_failure(void)
{
    cudaError_t e = next_launch_failure;
    next_launch_failure = cudaSuccess;
    return e;
}

} // extern "C"
