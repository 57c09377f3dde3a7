// A C++17 program using libowlore the way an outside project does: the
// installed header and library, found through CMake's find_package(owlore)
// or pkg-config. It takes one fused GaLore + AdamW step on a rank-1
// gradient and one owl_optimizer step, and checks both against the update
// rule's closed form (docs/optimizer.md, spec section 4). Prints OK.
#include <owlore/owlore.h>

#include <array>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <stdexcept>
#include <string>

namespace {

// Turns a failing status into an exception carrying the context's message.
void check(owl_context *ctx, owl_status status, const char *what)
{
    if (status != OWL_OK)
        throw std::runtime_error(std::string(what) + ": " +
                                 owl_status_name(status) + ": " +
                                 owl_context_last_error(ctx));
}

// Owning handles: each *_free accepts NULL, so a default deleter is enough.
struct ContextFree { void operator()(owl_context *p) const { owl_context_free(p); } };
struct GaloreFree { void operator()(owl_galore *p) const { owl_galore_free(p); } };
struct AdamwFree { void operator()(owl_adamw *p) const { owl_adamw_free(p); } };
struct OptimizerFree { void operator()(owl_optimizer *p) const { owl_optimizer_free(p); } };
using Context = std::unique_ptr<owl_context, ContextFree>;
using Galore = std::unique_ptr<owl_galore, GaloreFree>;
using Adamw = std::unique_ptr<owl_adamw, AdamwFree>;
using Optimizer = std::unique_ptr<owl_optimizer, OptimizerFree>;

constexpr int kRows = 4, kCols = 3;
constexpr double kLr = 0.01, kScale = 0.5;
constexpr double kBeta2 = 0.999, kEps = 1e-6; // the documented defaults

// The first AdamW step (t = 1) in GaLore semantics, per element of the
// projected gradient R: lr * R * sqrt(1 - b2) / (sqrt(1 - b2) |R| + eps).
double first_step(double r)
{
    const double c = std::sqrt(1.0 - kBeta2);
    return kLr * r * c / (c * std::fabs(r) + kEps);
}

bool close(double got, double want)
{
    return std::fabs(got - want) <= 1e-5 * std::fabs(want) + 1e-7;
}

// G = u v^T has rank 1: with rank 1 and m >= n the projector keeps
// Q = +-v/|v| (right projection), R = G Q^T = +-|v| u, and the step back
// is back(N) = N Q, so the sign of the basis cancels and
// W_ij -= alpha * first_step(|v| u_i) * v_j / |v|.
int lowrank_step(owl_context *ctx)
{
    const std::array<double, kRows> u{1.0, -2.0, 3.0, -0.5};
    const std::array<double, kCols> v{3.0, 4.0, 0.0};
    const double vnorm = 5.0;
    std::array<float, kRows * kCols> w{}, g{};
    for (int i = 0; i < kRows; i++)
        for (int j = 0; j < kCols; j++) {
            w[i * kCols + j] = 0.1f * static_cast<float>(i - j);
            g[i * kCols + j] = static_cast<float>(u[i] * v[j]);
        }
    const auto w0 = w;

    owl_galore_options go;
    check(ctx, owl_galore_options_init(&go, sizeof go), "owl_galore_options_init");
    go.rows = kRows;
    go.cols = kCols;
    go.rank = 1;
    go.scale = kScale;
    owl_galore *proj_raw = nullptr;
    check(ctx, owl_galore_create(ctx, &go, &proj_raw), "owl_galore_create");
    Galore proj(proj_raw);

    uint64_t r_rows = 0, r_cols = 0;
    check(ctx, owl_galore_lowrank_shape(proj.get(), &r_rows, &r_cols),
          "owl_galore_lowrank_shape");
    if (r_rows != kRows || r_cols != 1 || owl_galore_is_left(proj.get()) != 0) {
        std::fprintf(stderr, "low-rank shape %llux%llu, expected %dx1 (right)\n",
                     static_cast<unsigned long long>(r_rows),
                     static_cast<unsigned long long>(r_cols), kRows);
        return 1;
    }

    owl_adamw_options ao;
    check(ctx, owl_adamw_options_init(&ao, sizeof ao), "owl_adamw_options_init");
    owl_adamw *adam_raw = nullptr;
    check(ctx, owl_adamw_create(ctx, &ao, r_rows, r_cols, &adam_raw),
          "owl_adamw_create");
    Adamw adam(adam_raw);

    owl_tensor wt, gt;
    owl_tensor_init(&wt, w.data(), OWL_DTYPE_F32, kRows, kCols);
    owl_tensor_init(&gt, g.data(), OWL_DTYPE_F32, kRows, kCols);
    check(ctx, owl_adamw_lowrank(adam.get(), proj.get(), &wt, &gt, kLr),
          "owl_adamw_lowrank");

    int bad = 0;
    for (int i = 0; i < kRows; i++)
        for (int j = 0; j < kCols; j++) {
            const double want = w0[i * kCols + j] -
                kScale * first_step(vnorm * u[i]) * v[j] / vnorm;
            if (!close(w[i * kCols + j], want)) {
                std::fprintf(stderr, "low-rank W[%d,%d] = %.9g, expected %.9g\n",
                             i, j, static_cast<double>(w[i * kCols + j]), want);
                bad++;
            }
        }
    if (owl_adamw_step_count(adam.get()) != 1 ||
        owl_galore_refresh_count(proj.get()) != 1) {
        std::fprintf(stderr, "expected one update and one subspace computation\n");
        bad++;
    }

    // A wrong-shaped gradient is refused with a message, and W is unchanged.
    const auto w1 = w;
    owl_tensor wrong;
    owl_tensor_init(&wrong, g.data(), OWL_DTYPE_F32, kCols, kRows);
    if (owl_adamw_lowrank(adam.get(), proj.get(), &wt, &wrong, kLr) != OWL_ERR_SHAPE ||
        std::string(owl_context_last_error(ctx)).empty() || w != w1) {
        std::fprintf(stderr, "a transposed gradient was not refused cleanly\n");
        bad++;
    }
    return bad;
}

// One step of the whole-model optimizer, full rank (OWL_METHOD_FULL) on a
// single always-trained parameter: W -= first_step(G) elementwise.
int optimizer_step(owl_context *ctx)
{
    std::array<float, 6> w{0.5f, -0.25f, 1.0f, 0.0f, 2.0f, -1.5f};
    std::array<float, 6> g{0.3f, -1.2f, 0.05f, 2.0f, -0.7f, 1.0f};
    const auto w0 = w;

    owl_optimizer_options oo;
    check(ctx, owl_optimizer_options_init(&oo, sizeof oo),
          "owl_optimizer_options_init");
    oo.method = OWL_METHOD_FULL;
    oo.num_layers = 1;
    owl_optimizer *opt_raw = nullptr;
    check(ctx, owl_optimizer_create(ctx, &oo, &opt_raw), "owl_optimizer_create");
    Optimizer opt(opt_raw);

    owl_tensor wt, gt;
    owl_tensor_init(&wt, w.data(), OWL_DTYPE_F32, 2, 3);
    owl_tensor_init(&gt, g.data(), OWL_DTYPE_F32, 2, 3);
    uint64_t index = 99;
    check(ctx, owl_optimizer_add_param(opt.get(), OWL_LAYER_ALWAYS, &wt, &gt, 0, &index),
          "owl_optimizer_add_param");
    std::array<uint8_t, 1> mask{};
    check(ctx, owl_optimizer_active_layers(opt.get(), mask.data(), mask.size(), nullptr),
          "owl_optimizer_active_layers");
    check(ctx, owl_optimizer_step(opt.get(), kLr), "owl_optimizer_step");

    int bad = 0;
    if (index != 0 || mask[0] != 1 || owl_optimizer_step_index(opt.get()) != 1 ||
        owl_optimizer_num_params(opt.get()) != 1) {
        std::fprintf(stderr, "optimizer bookkeeping: index %llu, mask %d, step %llu\n",
                     static_cast<unsigned long long>(index), mask[0],
                     static_cast<unsigned long long>(owl_optimizer_step_index(opt.get())));
        bad++;
    }
    for (std::size_t k = 0; k < w.size(); k++) {
        const double want = w0[k] - first_step(g[k]);
        if (!close(w[k], want)) {
            std::fprintf(stderr, "optimizer W[%zu] = %.9g, expected %.9g\n", k,
                         static_cast<double>(w[k]), want);
            bad++;
        }
    }
    return bad;
}

} // namespace

int main()
{
    try {
        if (owl_version_number() / 10000 != OWL_VERSION_MAJOR) {
            std::fprintf(stderr, "loaded libowlore %s, built against %s\n",
                         owl_version_string(), OWL_VERSION_STRING);
            return 1;
        }
        owl_context *ctx_raw = nullptr;
        owl_status s = owl_context_create(&ctx_raw, nullptr);
        if (s != OWL_OK) {
            std::fprintf(stderr, "owl_context_create: %s\n", owl_status_name(s));
            return 1;
        }
        Context ctx(ctx_raw);
        const int bad = lowrank_step(ctx.get()) + optimizer_step(ctx.get());
        if (bad != 0) {
            std::fprintf(stderr, "%d check(s) failed\n", bad);
            return 1;
        }
    } catch (const std::exception &e) {
        std::fprintf(stderr, "%s\n", e.what());
        return 1;
    }
    std::printf("OK\n");
    return 0;
}
