// Cross-entropy of the LLaMa example over bf16 logits, in place: each row
// becomes its gradient, grad_scale * (softmax(row) - onehot(target)), and
// row_loss gets logsumexp(row) - row[target], all computed in f32.
#include "kcommon.cuh"

#include <cmath>

namespace lk_loss {

const unsigned kThreads = 256; // power of two: the block reductions' tree
// One block per row: the x dimension of a grid reaches 2^31 - 1 blocks,
// more rows than any batch has (the kernels still loop past it).
const unsigned kMaxRowBlocks = 0x7fffffffu;

// One block per row (rows loop beyond the grid). Three passes over the
// row: its maximum, the sum of exp(x - max), then the gradient written
// over the logits. The target's logit is read before the first barrier,
// and every element is written by the thread that read it, so the in-place
// update never races. A negative target is uniform over the block, so its
// early `continue` skips no barrier another thread waits at.
__global__ void cross_entropy(lk_bf16 *logits, float *row_loss,
                              const int32_t *targets, int64_t n, int vocab,
                              float grad_scale)
{
    __shared__ float scratch[kThreads];
    for (int64_t row = blockIdx.x; row < n; row += gridDim.x) {
        lk_bf16 *lr = logits + row * vocab;
        int32_t target = targets[row];
        if (target < 0) {
            for (int j = threadIdx.x; j < vocab; j += blockDim.x)
                lr[j] = 0;
            if (threadIdx.x == 0)
                row_loss[row] = 0.0f;
            continue;
        }
        float target_logit = lk::bf16_to_f32(lr[target]);
        float mx = -INFINITY;
        for (int j = threadIdx.x; j < vocab; j += blockDim.x)
            mx = lk::kmax(mx, lk::bf16_to_f32(lr[j]));
        mx = lk::block_max(mx, scratch);
        float sum = 0.0f;
        for (int j = threadIdx.x; j < vocab; j += blockDim.x)
            sum += lk::kexp(lk::bf16_to_f32(lr[j]) - mx);
        sum = lk::block_sum(sum, scratch);
        float lse = mx + lk::klog(sum);
        if (threadIdx.x == 0)
            row_loss[row] = lse - target_logit;
        for (int j = threadIdx.x; j < vocab; j += blockDim.x) {
            float p = lk::kexp(lk::bf16_to_f32(lr[j]) - lse);
            lr[j] = lk::f32_to_bf16(grad_scale * (j == target ? p - 1.0f : p));
        }
    }
}

// The launcher (lk.h); see elementwise.cu for the namespace. Targets must
// be < vocab (the model checks them on the host).
extern "C" int lk_cross_entropy(void *stream, lk_bf16 *logits, float *row_loss,
                                const int32_t *targets, int64_t n, int vocab,
                                float grad_scale)
{
    if (n <= 0 || vocab <= 0)
        return 0;
    unsigned blocks = n > (int64_t)kMaxRowBlocks ? kMaxRowBlocks : (unsigned)n;
    LK_LAUNCH(cross_entropy, blocks, kThreads, stream, logits, row_loss,
              targets, n, vocab, grad_scale);
    return lk::launch_status();
}

} // namespace lk_loss
