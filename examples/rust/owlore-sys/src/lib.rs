//! Raw declarations of the part of libowlore's C API (include/owlore/owlore.h)
//! that the `owlore` crate wraps. The structs are `#[repr(C)]` copies of the
//! header's, field for field; each carries its size in `struct_size`, which
//! the matching `*_init` function checks.
#![allow(non_camel_case_types)]

use std::os::raw::{c_char, c_void};

pub type owl_status = i32;
pub type owl_dtype = i32;
pub type owl_backend = i32;
pub type owl_weight_mode = i32;
pub type owl_draw_law = i32;
pub type owl_proj_type = i32;
pub type owl_svd_method = i32;
pub type owl_adamw_semantics = i32;
pub type owl_refresh_moments = i32;
pub type owl_rounding = i32;
pub type owl_method = i32;
pub type owl_frozen_policy = i32;

pub const OWL_OK: owl_status = 0;
pub const OWL_ERR_INVALID_ARGUMENT: owl_status = 1;
pub const OWL_ERR_NULL_POINTER: owl_status = 2;
pub const OWL_ERR_SHAPE: owl_status = 3;
pub const OWL_ERR_NONFINITE: owl_status = 6;

pub const OWL_DTYPE_F32: owl_dtype = 0;
pub const OWL_BACKEND_CPU: owl_backend = 0;

pub const OWL_WEIGHTS_OWLORE: owl_weight_mode = 0;
pub const OWL_WEIGHTS_UNIFORM: owl_weight_mode = 1;
pub const OWL_WEIGHTS_CUSTOM: owl_weight_mode = 4;
pub const OWL_DRAW_SYSTEMATIC: owl_draw_law = 0;

pub const OWL_PROJ_STD: owl_proj_type = 0;
pub const OWL_PROJ_LEFT: owl_proj_type = 2;
pub const OWL_PROJ_RIGHT: owl_proj_type = 3;
pub const OWL_SVD_EXACT: owl_svd_method = 0;

pub const OWL_ADAMW_GALORE: owl_adamw_semantics = 0;
pub const OWL_ADAMW_TORCH: owl_adamw_semantics = 1;

pub const OWL_METHOD_OWLORE: owl_method = 0;
pub const OWL_METHOD_OWLORE_FULL: owl_method = 1;
pub const OWL_METHOD_LISA: owl_method = 2;
pub const OWL_METHOD_GALORE: owl_method = 3;
pub const OWL_METHOD_FULL: owl_method = 4;
pub const OWL_FROZEN_KEEP: owl_frozen_policy = 0;

pub const OWL_LAYER_ALWAYS: u64 = u64::MAX;

#[repr(C)]
pub struct owl_context {
    _opaque: [u8; 0],
}
#[repr(C)]
pub struct owl_sampler {
    _opaque: [u8; 0],
}
#[repr(C)]
pub struct owl_galore {
    _opaque: [u8; 0],
}
#[repr(C)]
pub struct owl_adamw {
    _opaque: [u8; 0],
}
#[repr(C)]
pub struct owl_optimizer {
    _opaque: [u8; 0],
}

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct owl_tensor {
    pub data: *mut c_void,
    pub rows: i64,
    pub cols: i64,
    pub row_stride: i64,
    pub dtype: owl_dtype,
    pub flags: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct owl_context_options {
    pub struct_size: u64,
    pub backend: owl_backend,
    pub device: i32,
    pub num_threads: i32,
    pub reserved: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct owl_sampler_options {
    pub struct_size: u64,
    pub num_layers: u64,
    pub gamma: u64,
    pub period: u64,
    pub seed: u64,
    pub weight_mode: owl_weight_mode,
    pub law: owl_draw_law,
    pub weights: *const f64,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct owl_galore_options {
    pub struct_size: u64,
    pub rows: u64,
    pub cols: u64,
    pub rank: u64,
    pub update_gap: u64,
    pub scale: f64,
    pub proj_type: owl_proj_type,
    pub svd_method: owl_svd_method,
    pub oversample: u64,
    pub power_iters: u64,
    pub seed: u64,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct owl_adamw_options {
    pub struct_size: u64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
    pub semantics: owl_adamw_semantics,
    pub moment_dtype: owl_dtype,
    pub on_refresh: owl_refresh_moments,
    pub rounding: owl_rounding,
    pub seed: u64,
}

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct owl_optimizer_options {
    pub struct_size: u64,
    pub method: owl_method,
    pub frozen_policy: owl_frozen_policy,
    pub num_layers: u64,
    pub sampler: *const owl_sampler_options,
    pub galore: *const owl_galore_options,
    pub adamw: *const owl_adamw_options,
    pub max_grad_norm: f64,
    pub refresh_on_activation: i32,
    pub reserved: i32,
}

extern "C" {
    pub fn owl_version_number() -> u32;
    pub fn owl_version_string() -> *const c_char;
    pub fn owl_status_string(status: owl_status) -> *const c_char;
    pub fn owl_status_name(status: owl_status) -> *const c_char;

    pub fn owl_tensor_init(
        t: *mut owl_tensor,
        data: *mut c_void,
        dtype: owl_dtype,
        rows: i64,
        cols: i64,
    );

    pub fn owl_context_options_init(opts: *mut owl_context_options, struct_size: u64)
        -> owl_status;
    pub fn owl_context_create(
        out: *mut *mut owl_context,
        opts: *const owl_context_options,
    ) -> owl_status;
    pub fn owl_context_free(ctx: *mut owl_context);
    pub fn owl_context_num_threads(ctx: *const owl_context) -> i32;
    pub fn owl_context_last_error(ctx: *const owl_context) -> *const c_char;

    pub fn owl_sampler_options_init(opts: *mut owl_sampler_options, struct_size: u64)
        -> owl_status;
    pub fn owl_sampler_create(
        ctx: *mut owl_context,
        opts: *const owl_sampler_options,
        out: *mut *mut owl_sampler,
    ) -> owl_status;
    pub fn owl_sampler_free(sampler: *mut owl_sampler);
    pub fn owl_sampler_step(
        sampler: *mut owl_sampler,
        step: u64,
        mask: *mut u8,
        num_active: *mut u64,
        resampled: *mut i32,
    ) -> owl_status;

    pub fn owl_galore_options_init(opts: *mut owl_galore_options, struct_size: u64)
        -> owl_status;
    pub fn owl_galore_create(
        ctx: *mut owl_context,
        opts: *const owl_galore_options,
        out: *mut *mut owl_galore,
    ) -> owl_status;
    pub fn owl_galore_free(proj: *mut owl_galore);
    pub fn owl_galore_lowrank_shape(
        proj: *const owl_galore,
        rows: *mut u64,
        cols: *mut u64,
    ) -> owl_status;
    pub fn owl_galore_project(
        proj: *mut owl_galore,
        iter: u64,
        grad: *const owl_tensor,
        out: *mut owl_tensor,
        refreshed: *mut i32,
    ) -> owl_status;

    pub fn owl_adamw_options_init(opts: *mut owl_adamw_options, struct_size: u64)
        -> owl_status;
    pub fn owl_adamw_create(
        ctx: *mut owl_context,
        opts: *const owl_adamw_options,
        rows: u64,
        cols: u64,
        out: *mut *mut owl_adamw,
    ) -> owl_status;
    pub fn owl_adamw_free(adam: *mut owl_adamw);
    pub fn owl_adamw_lowrank(
        adam: *mut owl_adamw,
        proj: *mut owl_galore,
        weight: *mut owl_tensor,
        grad: *const owl_tensor,
        lr: f64,
    ) -> owl_status;
    pub fn owl_adamw_step_count(adam: *const owl_adamw) -> u64;
    pub fn owl_adamw_get_moment(
        adam: *const owl_adamw,
        which: i32,
        out: *mut owl_tensor,
    ) -> owl_status;

    pub fn owl_optimizer_options_init(opts: *mut owl_optimizer_options, struct_size: u64)
        -> owl_status;
    pub fn owl_optimizer_create(
        ctx: *mut owl_context,
        opts: *const owl_optimizer_options,
        out: *mut *mut owl_optimizer,
    ) -> owl_status;
    pub fn owl_optimizer_free(opt: *mut owl_optimizer);
    pub fn owl_optimizer_add_param(
        opt: *mut owl_optimizer,
        layer: u64,
        weight: *const owl_tensor,
        grad: *const owl_tensor,
        lowrank: i32,
        index: *mut u64,
    ) -> owl_status;
    pub fn owl_optimizer_active_layers(
        opt: *mut owl_optimizer,
        mask: *mut u8,
        num_layers: u64,
        resampled: *mut i32,
    ) -> owl_status;
    pub fn owl_optimizer_step(opt: *mut owl_optimizer, lr: f64) -> owl_status;
    pub fn owl_optimizer_step_index(opt: *const owl_optimizer) -> u64;
}

#[cfg(test)]
mod layout {
    use super::*;
    use std::mem::size_of;

    // The sizes the header's structs have on LP64 targets.
    #[test]
    fn struct_sizes_match_the_header() {
        assert_eq!(size_of::<owl_tensor>(), 40);
        assert_eq!(size_of::<owl_context_options>(), 24);
        assert_eq!(size_of::<owl_sampler_options>(), 56);
        assert_eq!(size_of::<owl_galore_options>(), 80);
        assert_eq!(size_of::<owl_adamw_options>(), 64);
        assert_eq!(size_of::<owl_optimizer_options>(), 64);
    }
}
