"""
    Owlore

Julia bindings for libowlore's C API (include/owlore/owlore.h), through
`ccall`. The raw layer mirrors the header one to one: every `OWL_API`
function is a Julia function of the same name taking the same arguments,
every options/result struct is an immutable `struct` with the C fields in
the C order, and every enumeration constant is an `Int32` constant. A small
layer on top (`OwloreError`, `check`, `Context`, `options`, `with`,
`rowmajor_tensor`) makes the common cases shorter.

Conventions of the raw layer:
- opaque handles (`owl_context *`, `owl_sampler *`, ...) are `Ptr{Cvoid}`;
  out-parameters for handles (`owl_context **`) are `Ptr{Ptr{Cvoid}}`: pass
  a `Ref{Ptr{Cvoid}}()`;
- every other pointer is a `Ptr{T}`: pass a `Ref{T}` or an `Array{T}` (Julia
  converts both), or `C_NULL` where the header allows NULL;
- `const char *` arguments are `Cstring`; returned strings are `Cstring`,
  turned into `String` with `unsafe_string`;
- tensors are row-major: a Julia `Matrix` (column-major) of size (n, m) is a
  row-major m x n tensor, see `rowmajor_tensor`.

The library is loaded from `ENV["OWLORE_LIB"]` when set when this file is
loaded, else `libowlore.so.0` from the dynamic loader's search path
(LD_LIBRARY_PATH, the system directories).
"""
module Owlore

const libowlore = get(ENV, "OWLORE_LIB", "libowlore.so.0")

# ---------------------------------------------------------------------
# Version
# ---------------------------------------------------------------------

const OWL_VERSION_MAJOR = 0
const OWL_VERSION_MINOR = 2
const OWL_VERSION_PATCH = 0
const OWL_VERSION_NUMBER = OWL_VERSION_MAJOR * 10000 + OWL_VERSION_MINOR * 100 + OWL_VERSION_PATCH
const OWL_VERSION_STRING = "0.2.0"

owl_version_number() = ccall((:owl_version_number, libowlore), UInt32, ())
owl_version_string() = ccall((:owl_version_string, libowlore), Cstring, ())

# ---------------------------------------------------------------------
# Status codes (owl_status is an int32_t)
# ---------------------------------------------------------------------

const OWL_OK = Int32(0)
const OWL_ERR_INVALID_ARGUMENT = Int32(1)
const OWL_ERR_NULL_POINTER = Int32(2)
const OWL_ERR_SHAPE = Int32(3)
const OWL_ERR_DTYPE = Int32(4)
const OWL_ERR_OUT_OF_MEMORY = Int32(5)
const OWL_ERR_NONFINITE = Int32(6)
const OWL_ERR_NUMERICAL = Int32(7)
const OWL_ERR_UNSUPPORTED = Int32(8)
const OWL_ERR_NO_DEVICE = Int32(9)
const OWL_ERR_DEVICE = Int32(10)
const OWL_ERR_IO = Int32(11)
const OWL_ERR_CORRUPT = Int32(12)
const OWL_ERR_VERSION = Int32(13)
const OWL_ERR_STRUCT_SIZE = Int32(14)
const OWL_ERR_STATE = Int32(15)
const OWL_ERR_MISMATCH = Int32(16)
const OWL_ERR_INTERNAL = Int32(17)

owl_status_string(status) =
    ccall((:owl_status_string, libowlore), Cstring, (Int32,), status)
owl_status_name(status) =
    ccall((:owl_status_name, libowlore), Cstring, (Int32,), status)

# ---------------------------------------------------------------------
# Enumerations
# ---------------------------------------------------------------------

const OWL_DTYPE_F32 = Int32(0)
const OWL_DTYPE_BF16 = Int32(1)
const OWL_DTYPE_F16 = Int32(2)
const OWL_DTYPE_F64 = Int32(3)

const OWL_BACKEND_CPU = Int32(0)
const OWL_BACKEND_CUDA = Int32(1)

owl_backend_available(backend) =
    ccall((:owl_backend_available, libowlore), Int32, (Int32,), backend)

# ---------------------------------------------------------------------
# Tensor descriptor
# ---------------------------------------------------------------------

struct Tensor                 # owl_tensor
    data::Ptr{Cvoid}
    rows::Int64
    cols::Int64
    row_stride::Int64         # in elements
    dtype::Int32              # owl_dtype
    flags::Int32
end

owl_tensor_init(t, data, dtype, rows, cols) =
    ccall((:owl_tensor_init, libowlore), Cvoid,
          (Ptr{Tensor}, Ptr{Cvoid}, Int32, Int64, Int64),
          t, data, dtype, rows, cols)

# ---------------------------------------------------------------------
# Context
# ---------------------------------------------------------------------

struct ContextOptions         # owl_context_options
    struct_size::UInt64
    backend::Int32            # owl_backend
    device::Int32
    num_threads::Int32
    reserved::Int32
end

owl_context_options_init(opts, struct_size) =
    ccall((:owl_context_options_init, libowlore), Int32,
          (Ptr{ContextOptions}, UInt64), opts, struct_size)
owl_context_create(out, opts) =
    ccall((:owl_context_create, libowlore), Int32,
          (Ptr{Ptr{Cvoid}}, Ptr{ContextOptions}), out, opts)
owl_context_free(ctx) =
    ccall((:owl_context_free, libowlore), Cvoid, (Ptr{Cvoid},), ctx)
owl_context_set_stream(ctx, stream) =
    ccall((:owl_context_set_stream, libowlore), Int32,
          (Ptr{Cvoid}, Ptr{Cvoid}), ctx, stream)
owl_context_backend(ctx) =
    ccall((:owl_context_backend, libowlore), Int32, (Ptr{Cvoid},), ctx)
owl_context_num_threads(ctx) =
    ccall((:owl_context_num_threads, libowlore), Int32, (Ptr{Cvoid},), ctx)
owl_context_last_error(ctx) =
    ccall((:owl_context_last_error, libowlore), Cstring, (Ptr{Cvoid},), ctx)
owl_context_synchronize(ctx) =
    ccall((:owl_context_synchronize, libowlore), Int32, (Ptr{Cvoid},), ctx)
owl_context_nonfinite_skips(ctx, count) =
    ccall((:owl_context_nonfinite_skips, libowlore), Int32,
          (Ptr{Cvoid}, Ptr{UInt64}), ctx, count)

# ---------------------------------------------------------------------
# Activation statistics, LOD and ESD
# ---------------------------------------------------------------------

owl_act_norm_accumulate(ctx, x, sumsq) =
    ccall((:owl_act_norm_accumulate, libowlore), Int32,
          (Ptr{Cvoid}, Ptr{Tensor}, Ptr{Tensor}), ctx, x, sumsq)
owl_lod_compute(ctx, weights, input_sumsq, count, M, ratio) =
    ccall((:owl_lod_compute, libowlore), Int32,
          (Ptr{Cvoid}, Ptr{Tensor}, Ptr{Tensor}, UInt64, Cdouble, Ptr{Cdouble}),
          ctx, weights, input_sumsq, count, M, ratio)
owl_lod_compute_async(ctx, weights, input_sumsq, count, M, ratio) =
    ccall((:owl_lod_compute_async, libowlore), Int32,
          (Ptr{Cvoid}, Ptr{Tensor}, Ptr{Tensor}, UInt64, Cdouble, Ptr{Tensor}),
          ctx, weights, input_sumsq, count, M, ratio)

const OWL_XMIN_FIX_FINGER = Int32(0)
const OWL_XMIN_MEDIAN = Int32(1)
const OWL_XMIN_KS_SCAN = Int32(2)

struct EsdResult              # owl_esd_result
    struct_size::UInt64
    alpha::Cdouble
    xmin::Cdouble
    ks_distance::Cdouble
    xmin_index::UInt64
    num_eigs::UInt64
end

owl_esd_result_init(res, struct_size) =
    ccall((:owl_esd_result_init, libowlore), Int32,
          (Ptr{EsdResult}, UInt64), res, struct_size)
owl_esd_alpha_hill(ctx, weight, method, result) =
    ccall((:owl_esd_alpha_hill, libowlore), Int32,
          (Ptr{Cvoid}, Ptr{Tensor}, Int32, Ptr{EsdResult}),
          ctx, weight, method, result)
owl_esd_alpha_hill_eigs(ctx, eigenvalues, count, method, result) =
    ccall((:owl_esd_alpha_hill_eigs, libowlore), Int32,
          (Ptr{Cvoid}, Ptr{Cdouble}, UInt64, Int32, Ptr{EsdResult}),
          ctx, eigenvalues, count, method, result)

# ---------------------------------------------------------------------
# Layer sampler
# ---------------------------------------------------------------------

const OWL_WEIGHTS_OWLORE = Int32(0)
const OWL_WEIGHTS_UNIFORM = Int32(1)
const OWL_WEIGHTS_DECREASING = Int32(2)
const OWL_WEIGHTS_INCREASING = Int32(3)
const OWL_WEIGHTS_CUSTOM = Int32(4)

const OWL_DRAW_SYSTEMATIC = Int32(0)
const OWL_DRAW_REFERENCE = Int32(1)
const OWL_DRAW_BERNOULLI = Int32(2)

struct SamplerOptions         # owl_sampler_options
    struct_size::UInt64
    num_layers::UInt64
    gamma::UInt64
    period::UInt64
    seed::UInt64
    weight_mode::Int32        # owl_weight_mode
    law::Int32                # owl_draw_law
    weights::Ptr{Cdouble}     # copied at create; keep the array alive until then
end

owl_sampler_options_init(opts, struct_size) =
    ccall((:owl_sampler_options_init, libowlore), Int32,
          (Ptr{SamplerOptions}, UInt64), opts, struct_size)
owl_sampler_create(ctx, opts, out) =
    ccall((:owl_sampler_create, libowlore), Int32,
          (Ptr{Cvoid}, Ptr{SamplerOptions}, Ptr{Ptr{Cvoid}}), ctx, opts, out)
owl_sampler_free(sampler) =
    ccall((:owl_sampler_free, libowlore), Cvoid, (Ptr{Cvoid},), sampler)
owl_sampler_step(sampler, step, mask, num_active, resampled) =
    ccall((:owl_sampler_step, libowlore), Int32,
          (Ptr{Cvoid}, UInt64, Ptr{UInt8}, Ptr{UInt64}, Ptr{Int32}),
          sampler, step, mask, num_active, resampled)
owl_sampler_probabilities(sampler, p, pi) =
    ccall((:owl_sampler_probabilities, libowlore), Int32,
          (Ptr{Cvoid}, Ptr{Cdouble}, Ptr{Cdouble}), sampler, p, pi)

# ---------------------------------------------------------------------
# GaLore projector
# ---------------------------------------------------------------------

const OWL_PROJ_STD = Int32(0)
const OWL_PROJ_REVERSE_STD = Int32(1)
const OWL_PROJ_LEFT = Int32(2)
const OWL_PROJ_RIGHT = Int32(3)

const OWL_SVD_EXACT = Int32(0)
const OWL_SVD_RANDOMIZED = Int32(1)

struct GaloreOptions          # owl_galore_options
    struct_size::UInt64
    rows::UInt64
    cols::UInt64
    rank::UInt64
    update_gap::UInt64
    scale::Cdouble
    proj_type::Int32          # owl_proj_type
    svd_method::Int32         # owl_svd_method
    oversample::UInt64
    power_iters::UInt64
    seed::UInt64
end

owl_galore_options_init(opts, struct_size) =
    ccall((:owl_galore_options_init, libowlore), Int32,
          (Ptr{GaloreOptions}, UInt64), opts, struct_size)
owl_galore_create(ctx, opts, out) =
    ccall((:owl_galore_create, libowlore), Int32,
          (Ptr{Cvoid}, Ptr{GaloreOptions}, Ptr{Ptr{Cvoid}}), ctx, opts, out)
owl_galore_free(proj) =
    ccall((:owl_galore_free, libowlore), Cvoid, (Ptr{Cvoid},), proj)
owl_galore_lowrank_shape(proj, rows, cols) =
    ccall((:owl_galore_lowrank_shape, libowlore), Int32,
          (Ptr{Cvoid}, Ptr{UInt64}, Ptr{UInt64}), proj, rows, cols)
owl_galore_is_left(proj) =
    ccall((:owl_galore_is_left, libowlore), Int32, (Ptr{Cvoid},), proj)
owl_galore_project(proj, iter, grad, out, refreshed) =
    ccall((:owl_galore_project, libowlore), Int32,
          (Ptr{Cvoid}, UInt64, Ptr{Tensor}, Ptr{Tensor}, Ptr{Int32}),
          proj, iter, grad, out, refreshed)
owl_galore_project_back(proj, lowrank, out) =
    ccall((:owl_galore_project_back, libowlore), Int32,
          (Ptr{Cvoid}, Ptr{Tensor}, Ptr{Tensor}), proj, lowrank, out)
owl_galore_refresh(proj, grad) =
    ccall((:owl_galore_refresh, libowlore), Int32,
          (Ptr{Cvoid}, Ptr{Tensor}), proj, grad)
owl_galore_invalidate(proj) =
    ccall((:owl_galore_invalidate, libowlore), Int32, (Ptr{Cvoid},), proj)
owl_galore_get_basis(proj, out) =
    ccall((:owl_galore_get_basis, libowlore), Int32,
          (Ptr{Cvoid}, Ptr{Tensor}), proj, out)
owl_galore_refresh_count(proj) =
    ccall((:owl_galore_refresh_count, libowlore), UInt64, (Ptr{Cvoid},), proj)

# ---------------------------------------------------------------------
# AdamW
# ---------------------------------------------------------------------

const OWL_ADAMW_GALORE = Int32(0)
const OWL_ADAMW_TORCH = Int32(1)

const OWL_MOMENTS_KEEP = Int32(0)
const OWL_MOMENTS_RESET = Int32(1)

const OWL_ROUND_NEAREST = Int32(0)
const OWL_ROUND_STOCHASTIC = Int32(1)

struct AdamwOptions           # owl_adamw_options
    struct_size::UInt64
    beta1::Cdouble
    beta2::Cdouble
    eps::Cdouble
    weight_decay::Cdouble
    semantics::Int32          # owl_adamw_semantics
    moment_dtype::Int32       # owl_dtype
    on_refresh::Int32         # owl_refresh_moments
    rounding::Int32           # owl_rounding
    seed::UInt64
end

owl_adamw_options_init(opts, struct_size) =
    ccall((:owl_adamw_options_init, libowlore), Int32,
          (Ptr{AdamwOptions}, UInt64), opts, struct_size)
owl_adamw_create(ctx, opts, rows, cols, out) =
    ccall((:owl_adamw_create, libowlore), Int32,
          (Ptr{Cvoid}, Ptr{AdamwOptions}, UInt64, UInt64, Ptr{Ptr{Cvoid}}),
          ctx, opts, rows, cols, out)
owl_adamw_free(adam) =
    ccall((:owl_adamw_free, libowlore), Cvoid, (Ptr{Cvoid},), adam)
owl_adamw_lowrank(adam, proj, weight, grad, lr) =
    ccall((:owl_adamw_lowrank, libowlore), Int32,
          (Ptr{Cvoid}, Ptr{Cvoid}, Ptr{Tensor}, Ptr{Tensor}, Cdouble),
          adam, proj, weight, grad, lr)
owl_adamw_full(adam, weight, grad, lr) =
    ccall((:owl_adamw_full, libowlore), Int32,
          (Ptr{Cvoid}, Ptr{Tensor}, Ptr{Tensor}, Cdouble), adam, weight, grad, lr)
owl_adamw_step_count(adam) =
    ccall((:owl_adamw_step_count, libowlore), UInt64, (Ptr{Cvoid},), adam)
owl_adamw_bias_step(adam) =
    ccall((:owl_adamw_bias_step, libowlore), UInt64, (Ptr{Cvoid},), adam)
owl_adamw_reset(adam) =
    ccall((:owl_adamw_reset, libowlore), Int32, (Ptr{Cvoid},), adam)
owl_adamw_get_moment(adam, which, out) =
    ccall((:owl_adamw_get_moment, libowlore), Int32,
          (Ptr{Cvoid}, Int32, Ptr{Tensor}), adam, which, out)

# ---------------------------------------------------------------------
# State persistence
# ---------------------------------------------------------------------

owl_sampler_state_size(sampler, bytes) =
    ccall((:owl_sampler_state_size, libowlore), Int32,
          (Ptr{Cvoid}, Ptr{UInt64}), sampler, bytes)
owl_sampler_save(sampler, buf, capacity, written) =
    ccall((:owl_sampler_save, libowlore), Int32,
          (Ptr{Cvoid}, Ptr{Cvoid}, UInt64, Ptr{UInt64}),
          sampler, buf, capacity, written)
owl_sampler_load(sampler, buf, size) =
    ccall((:owl_sampler_load, libowlore), Int32,
          (Ptr{Cvoid}, Ptr{Cvoid}, UInt64), sampler, buf, size)
owl_sampler_save_file(sampler, path) =
    ccall((:owl_sampler_save_file, libowlore), Int32,
          (Ptr{Cvoid}, Cstring), sampler, path)
owl_sampler_load_file(sampler, path) =
    ccall((:owl_sampler_load_file, libowlore), Int32,
          (Ptr{Cvoid}, Cstring), sampler, path)

owl_galore_state_size(proj, bytes) =
    ccall((:owl_galore_state_size, libowlore), Int32,
          (Ptr{Cvoid}, Ptr{UInt64}), proj, bytes)
owl_galore_save(proj, buf, capacity, written) =
    ccall((:owl_galore_save, libowlore), Int32,
          (Ptr{Cvoid}, Ptr{Cvoid}, UInt64, Ptr{UInt64}),
          proj, buf, capacity, written)
owl_galore_load(proj, buf, size) =
    ccall((:owl_galore_load, libowlore), Int32,
          (Ptr{Cvoid}, Ptr{Cvoid}, UInt64), proj, buf, size)
owl_galore_save_file(proj, path) =
    ccall((:owl_galore_save_file, libowlore), Int32,
          (Ptr{Cvoid}, Cstring), proj, path)
owl_galore_load_file(proj, path) =
    ccall((:owl_galore_load_file, libowlore), Int32,
          (Ptr{Cvoid}, Cstring), proj, path)

owl_adamw_state_size(adam, bytes) =
    ccall((:owl_adamw_state_size, libowlore), Int32,
          (Ptr{Cvoid}, Ptr{UInt64}), adam, bytes)
owl_adamw_save(adam, buf, capacity, written) =
    ccall((:owl_adamw_save, libowlore), Int32,
          (Ptr{Cvoid}, Ptr{Cvoid}, UInt64, Ptr{UInt64}),
          adam, buf, capacity, written)
owl_adamw_load(adam, buf, size) =
    ccall((:owl_adamw_load, libowlore), Int32,
          (Ptr{Cvoid}, Ptr{Cvoid}, UInt64), adam, buf, size)
owl_adamw_save_file(adam, path) =
    ccall((:owl_adamw_save_file, libowlore), Int32,
          (Ptr{Cvoid}, Cstring), adam, path)
owl_adamw_load_file(adam, path) =
    ccall((:owl_adamw_load_file, libowlore), Int32,
          (Ptr{Cvoid}, Cstring), adam, path)

# ---------------------------------------------------------------------
# Optimizer
# ---------------------------------------------------------------------

const OWL_METHOD_OWLORE = Int32(0)
const OWL_METHOD_OWLORE_FULL = Int32(1)
const OWL_METHOD_LISA = Int32(2)
const OWL_METHOD_GALORE = Int32(3)
const OWL_METHOD_FULL = Int32(4)

const OWL_FROZEN_KEEP = Int32(0)
const OWL_FROZEN_RESET = Int32(1)
const OWL_FROZEN_OFFLOAD = Int32(2)
const OWL_FROZEN_FREE = Int32(3)

const OWL_LAYER_ALWAYS = typemax(UInt64)

struct OptimizerOptions       # owl_optimizer_options
    struct_size::UInt64
    method::Int32             # owl_method
    frozen_policy::Int32      # owl_frozen_policy
    num_layers::UInt64
    sampler::Ptr{SamplerOptions}
    galore::Ptr{GaloreOptions}
    adamw::Ptr{AdamwOptions}
    max_grad_norm::Cdouble
    refresh_on_activation::Int32
    reserved::Int32
end

owl_optimizer_options_init(opts, struct_size) =
    ccall((:owl_optimizer_options_init, libowlore), Int32,
          (Ptr{OptimizerOptions}, UInt64), opts, struct_size)
owl_optimizer_create(ctx, opts, out) =
    ccall((:owl_optimizer_create, libowlore), Int32,
          (Ptr{Cvoid}, Ptr{OptimizerOptions}, Ptr{Ptr{Cvoid}}), ctx, opts, out)
owl_optimizer_free(opt) =
    ccall((:owl_optimizer_free, libowlore), Cvoid, (Ptr{Cvoid},), opt)
owl_optimizer_add_param(opt, layer, weight, grad, lowrank, index) =
    ccall((:owl_optimizer_add_param, libowlore), Int32,
          (Ptr{Cvoid}, UInt64, Ptr{Tensor}, Ptr{Tensor}, Int32, Ptr{UInt64}),
          opt, layer, weight, grad, lowrank, index)
owl_optimizer_set_grad(opt, index, grad) =
    ccall((:owl_optimizer_set_grad, libowlore), Int32,
          (Ptr{Cvoid}, UInt64, Ptr{Tensor}), opt, index, grad)
owl_optimizer_active_layers(opt, mask, num_layers, resampled) =
    ccall((:owl_optimizer_active_layers, libowlore), Int32,
          (Ptr{Cvoid}, Ptr{UInt8}, UInt64, Ptr{Int32}),
          opt, mask, num_layers, resampled)
owl_optimizer_step(opt, lr) =
    ccall((:owl_optimizer_step, libowlore), Int32, (Ptr{Cvoid}, Cdouble), opt, lr)
owl_optimizer_step_index(opt) =
    ccall((:owl_optimizer_step_index, libowlore), UInt64, (Ptr{Cvoid},), opt)
owl_optimizer_num_params(opt) =
    ccall((:owl_optimizer_num_params, libowlore), UInt64, (Ptr{Cvoid},), opt)
owl_optimizer_last_grad_norm(opt, norm) =
    ccall((:owl_optimizer_last_grad_norm, libowlore), Int32,
          (Ptr{Cvoid}, Ptr{Cdouble}), opt, norm)

struct MemoryUsage            # owl_memory_usage
    struct_size::UInt64
    device_moments::UInt64
    device_projectors::UInt64
    device_workspace::UInt64
    host_moments::UInt64
    host_projectors::UInt64
    host_workspace::UInt64
end

owl_memory_usage_init(usage, struct_size) =
    ccall((:owl_memory_usage_init, libowlore), Int32,
          (Ptr{MemoryUsage}, UInt64), usage, struct_size)
owl_optimizer_memory(opt, usage) =
    ccall((:owl_optimizer_memory, libowlore), Int32,
          (Ptr{Cvoid}, Ptr{MemoryUsage}), opt, usage)

owl_optimizer_state_size(opt, bytes) =
    ccall((:owl_optimizer_state_size, libowlore), Int32,
          (Ptr{Cvoid}, Ptr{UInt64}), opt, bytes)
owl_optimizer_save(opt, buf, capacity, written) =
    ccall((:owl_optimizer_save, libowlore), Int32,
          (Ptr{Cvoid}, Ptr{Cvoid}, UInt64, Ptr{UInt64}),
          opt, buf, capacity, written)
owl_optimizer_load(opt, buf, size) =
    ccall((:owl_optimizer_load, libowlore), Int32,
          (Ptr{Cvoid}, Ptr{Cvoid}, UInt64), opt, buf, size)
owl_optimizer_save_file(opt, path) =
    ccall((:owl_optimizer_save_file, libowlore), Int32,
          (Ptr{Cvoid}, Cstring), opt, path)
owl_optimizer_load_file(opt, path) =
    ccall((:owl_optimizer_load_file, libowlore), Int32,
          (Ptr{Cvoid}, Cstring), opt, path)

# ---------------------------------------------------------------------
# Memory planner
# ---------------------------------------------------------------------

struct ModelShape             # owl_model_shape
    struct_size::UInt64
    num_layers::UInt64
    hidden::UInt64
    intermediate::UInt64
    heads::UInt64
    kv_heads::UInt64
    vocab::UInt64
    weight_dtype::Int32       # owl_dtype
    grad_dtype::Int32         # owl_dtype
    tied_embeddings::Int32
    reserved::Int32
end

struct MemoryPlan             # owl_memory_plan
    struct_size::UInt64
    weights::UInt64
    gradients::UInt64
    optimizer_state::UInt64
    projectors::UInt64
    workspace::UInt64
    total::UInt64
end

owl_model_shape_init(shape, struct_size) =
    ccall((:owl_model_shape_init, libowlore), Int32,
          (Ptr{ModelShape}, UInt64), shape, struct_size)
owl_memory_plan_init(plan, struct_size) =
    ccall((:owl_memory_plan_init, libowlore), Int32,
          (Ptr{MemoryPlan}, UInt64), plan, struct_size)
owl_memory_plan_compute(ctx, shape, opts, plan) =
    ccall((:owl_memory_plan_compute, libowlore), Int32,
          (Ptr{Cvoid}, Ptr{ModelShape}, Ptr{OptimizerOptions}, Ptr{MemoryPlan}),
          ctx, shape, opts, plan)

# ---------------------------------------------------------------------
# A small idiomatic layer
# ---------------------------------------------------------------------

"""A failing libowlore call: its status, the status's name and the context's message."""
struct OwloreError <: Exception
    status::Int32
    name::String
    message::String
end

Base.showerror(io::IO, e::OwloreError) = print(io, e.name, ": ", e.message)

"""
    Context(; backend = OWL_BACKEND_CPU, num_threads = 0)

An owl_context, freed by the garbage collector (or at once with `close`).
Pass it where the raw layer takes a context: it converts to its pointer.
"""
mutable struct Context
    ptr::Ptr{Cvoid}
    function Context(; backend::Integer = OWL_BACKEND_CPU, num_threads::Integer = 0)
        opts = with(options(ContextOptions); backend = Int32(backend),
                    num_threads = Int32(num_threads))
        out = Ref{Ptr{Cvoid}}(C_NULL)
        status = owl_context_create(out, Ref(opts))
        status == OWL_OK || throw(OwloreError(status,
            unsafe_string(owl_status_name(status)),
            unsafe_string(owl_status_string(status))))
        ctx = new(out[])
        finalizer(close, ctx)
    end
end

function Base.close(ctx::Context)
    owl_context_free(ctx.ptr)   # accepts NULL: closing twice is harmless
    ctx.ptr = C_NULL
    nothing
end

Base.unsafe_convert(::Type{Ptr{Cvoid}}, ctx::Context) = ctx.ptr

"""
    check(ctx, status)

Returns nothing for OWL_OK, else throws an `OwloreError` with the message
the call left on `ctx` (a `Context` or a raw context pointer).
"""
function check(ctx, status::Integer)
    status == OWL_OK && return nothing
    ptr = ctx isa Context ? ctx.ptr : ctx
    message = ptr == C_NULL ? unsafe_string(owl_status_string(status)) :
                              unsafe_string(owl_context_last_error(ptr))
    throw(OwloreError(Int32(status), unsafe_string(owl_status_name(status)), message))
end

const _option_inits = Dict{DataType,Function}(
    ContextOptions => owl_context_options_init,
    EsdResult => owl_esd_result_init,
    SamplerOptions => owl_sampler_options_init,
    GaloreOptions => owl_galore_options_init,
    AdamwOptions => owl_adamw_options_init,
    OptimizerOptions => owl_optimizer_options_init,
    MemoryUsage => owl_memory_usage_init,
    ModelShape => owl_model_shape_init,
    MemoryPlan => owl_memory_plan_init,
)

"""
    options(T)

A `T` (an options or result struct) filled with the library's defaults by
its `*_init` function, with `struct_size = sizeof(T)`.
"""
function options(::Type{T}) where {T}
    r = Ref{T}()
    status = _option_inits[T](r, UInt64(sizeof(T)))
    status == OWL_OK || throw(OwloreError(status,
        unsafe_string(owl_status_name(status)),
        unsafe_string(owl_status_string(status))))
    r[]
end

"""
    with(s; field = value, ...)

A copy of the immutable struct `s` with the named fields replaced (each
value converted to the field's type).
"""
function with(s::T; kwargs...) where {T}
    for k in keys(kwargs)
        k in fieldnames(T) || throw(ArgumentError("$(T) has no field $(k)"))
    end
    T((haskey(kwargs, f) ? convert(fieldtype(T, f), kwargs[f]) : getfield(s, f)
       for f in fieldnames(T))...)
end

const _dtypes = Dict{DataType,Int32}(Float32 => OWL_DTYPE_F32, Float64 => OWL_DTYPE_F64)

"""
    rowmajor_tensor(A::Matrix)

The owl_tensor of a dense Julia matrix. Julia stores columns contiguously,
so a Julia n x m matrix is the row-major m x n tensor the library sees:
rows = size(A, 2), cols = size(A, 1). Keep `A` alive (GC.@preserve) while
the library uses the descriptor.
"""
function rowmajor_tensor(A::Matrix{T}) where {T}
    dtype = get(_dtypes, T) do
        throw(ArgumentError("no owl_dtype for $(T); use Float32 or Float64"))
    end
    Tensor(Ptr{Cvoid}(pointer(A)), size(A, 2), size(A, 1), size(A, 1), dtype, 0)
end

end # module Owlore
