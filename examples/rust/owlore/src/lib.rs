//! Safe Rust interface to libowlore: owned handles that free themselves on
//! drop, and `Result<T, Error>` where the error carries the library's status
//! and the context's message ("grad is 64x32, weight is 32x64").
//!
//! Handles borrow the context they were created from, so the borrow checker
//! enforces the C rule that a context outlives its handles. Matrices are
//! row-major `f32` slices with explicit `rows x cols`.

use owlore_sys as sys;
use std::ffi::CStr;
use std::fmt;
use std::os::raw::{c_char, c_void};
use std::ptr;

pub use sys::{
    OWL_ADAMW_GALORE, OWL_ADAMW_TORCH, OWL_LAYER_ALWAYS, OWL_METHOD_FULL, OWL_METHOD_GALORE,
    OWL_METHOD_LISA, OWL_METHOD_OWLORE, OWL_METHOD_OWLORE_FULL, OWL_PROJ_LEFT, OWL_PROJ_RIGHT,
    OWL_PROJ_STD, OWL_WEIGHTS_CUSTOM, OWL_WEIGHTS_OWLORE, OWL_WEIGHTS_UNIFORM,
};
pub use sys::{owl_adamw_options as AdamwOptions, owl_galore_options as GaloreOptions};

/// A failed call: the status, its stable name and the context's message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Error {
    pub status: i32,
    pub name: String,
    pub message: String,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.message.is_empty() {
            write!(f, "{}: {}", self.name, status_string(self.status))
        } else {
            write!(f, "{}: {}", self.name, self.message)
        }
    }
}

impl std::error::Error for Error {}

pub type Result<T> = std::result::Result<T, Error>;

fn c_text(p: *const c_char) -> String {
    if p.is_null() {
        String::new()
    } else {
        unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
    }
}

/// The status's stable name, e.g. "OWL_ERR_SHAPE".
pub fn status_name(status: i32) -> String {
    c_text(unsafe { sys::owl_status_name(status) })
}

/// The fixed sentence describing a status.
pub fn status_string(status: i32) -> String {
    c_text(unsafe { sys::owl_status_string(status) })
}

/// Version string of the library actually loaded.
pub fn version() -> String {
    c_text(unsafe { sys::owl_version_string() })
}

fn tensor(data: *const f32, rows: usize, cols: usize) -> sys::owl_tensor {
    let mut t = sys::owl_tensor {
        data: ptr::null_mut(),
        rows: 0,
        cols: 0,
        row_stride: 0,
        dtype: 0,
        flags: 0,
    };
    unsafe {
        sys::owl_tensor_init(&mut t, data as *mut c_void, sys::OWL_DTYPE_F32, rows as i64, cols as i64)
    };
    t
}

fn check_len(what: &str, len: usize, rows: usize, cols: usize) -> Result<()> {
    if rows.checked_mul(cols) != Some(len) {
        return Err(Error {
            status: sys::OWL_ERR_SHAPE,
            name: status_name(sys::OWL_ERR_SHAPE),
            message: format!("{} holds {} values, not {}x{}", what, len, rows, cols),
        });
    }
    Ok(())
}

/// Where the library computes; owns an `owl_context`.
pub struct Context {
    raw: *mut sys::owl_context,
}

impl Context {
    /// A CPU context; `num_threads == 0` uses every online core.
    pub fn cpu(num_threads: i32) -> Result<Context> {
        let mut opts = sys::owl_context_options::default();
        let st = unsafe {
            sys::owl_context_options_init(&mut opts, std::mem::size_of_val(&opts) as u64)
        };
        if st != sys::OWL_OK {
            return Err(Error { status: st, name: status_name(st), message: String::new() });
        }
        opts.backend = sys::OWL_BACKEND_CPU;
        opts.num_threads = num_threads;
        let mut raw = ptr::null_mut();
        let st = unsafe { sys::owl_context_create(&mut raw, &opts) };
        if st != sys::OWL_OK {
            // No context exists to hold a message.
            return Err(Error { status: st, name: status_name(st), message: String::new() });
        }
        Ok(Context { raw })
    }

    pub fn num_threads(&self) -> i32 {
        unsafe { sys::owl_context_num_threads(self.raw) }
    }

    /// The message of the last failing call on this context ("" if none).
    pub fn last_error(&self) -> String {
        c_text(unsafe { sys::owl_context_last_error(self.raw) })
    }

    fn check(&self, status: i32) -> Result<()> {
        if status == sys::OWL_OK {
            Ok(())
        } else {
            Err(Error { status, name: status_name(status), message: self.last_error() })
        }
    }
}

impl Drop for Context {
    fn drop(&mut self) {
        unsafe { sys::owl_context_free(self.raw) }
    }
}

/// The active layers of one sampler step.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SamplerStep {
    pub mask: Vec<u8>,
    pub num_active: u64,
    pub resampled: bool,
}

/// Layer sampler (`owl_sampler`).
pub struct Sampler<'ctx> {
    raw: *mut sys::owl_sampler,
    ctx: &'ctx Context,
    num_layers: usize,
}

/// Sampler settings; `weights` is needed for OWLORE and CUSTOM modes.
#[derive(Clone, Debug)]
pub struct SamplerConfig {
    pub num_layers: u64,
    pub gamma: u64,
    pub period: u64,
    pub seed: u64,
    pub weight_mode: i32,
    pub weights: Option<Vec<f64>>,
}

fn sampler_options(cfg: &SamplerConfig) -> sys::owl_sampler_options {
    let mut opts = sys::owl_sampler_options {
        struct_size: 0,
        num_layers: 0,
        gamma: 0,
        period: 0,
        seed: 0,
        weight_mode: 0,
        law: 0,
        weights: ptr::null(),
    };
    unsafe { sys::owl_sampler_options_init(&mut opts, std::mem::size_of_val(&opts) as u64) };
    opts.num_layers = cfg.num_layers;
    opts.gamma = cfg.gamma;
    opts.period = cfg.period;
    opts.seed = cfg.seed;
    opts.weight_mode = cfg.weight_mode;
    opts.law = sys::OWL_DRAW_SYSTEMATIC;
    if let Some(w) = &cfg.weights {
        opts.weights = w.as_ptr();
    }
    opts
}

impl<'ctx> Sampler<'ctx> {
    pub fn new(ctx: &'ctx Context, cfg: &SamplerConfig) -> Result<Sampler<'ctx>> {
        let opts = sampler_options(cfg);
        let mut raw = ptr::null_mut();
        ctx.check(unsafe { sys::owl_sampler_create(ctx.raw, &opts, &mut raw) })?;
        Ok(Sampler { raw, ctx, num_layers: cfg.num_layers as usize })
    }

    /// The active layers at global step `step`.
    pub fn step(&mut self, step: u64) -> Result<SamplerStep> {
        let mut mask = vec![0u8; self.num_layers];
        let mut num_active = 0u64;
        let mut resampled = 0i32;
        self.ctx.check(unsafe {
            sys::owl_sampler_step(self.raw, step, mask.as_mut_ptr(), &mut num_active, &mut resampled)
        })?;
        Ok(SamplerStep { mask, num_active, resampled: resampled != 0 })
    }
}

impl Drop for Sampler<'_> {
    fn drop(&mut self) {
        unsafe { sys::owl_sampler_free(self.raw) }
    }
}

/// Defaults of the GaLore options, to be adjusted before use.
pub fn galore_defaults() -> GaloreOptions {
    let mut opts = GaloreOptions::default();
    unsafe { sys::owl_galore_options_init(&mut opts, std::mem::size_of_val(&opts) as u64) };
    opts
}

/// Defaults of the AdamW options, to be adjusted before use.
pub fn adamw_defaults() -> AdamwOptions {
    let mut opts = AdamwOptions::default();
    unsafe { sys::owl_adamw_options_init(&mut opts, std::mem::size_of_val(&opts) as u64) };
    opts
}

/// GaLore projector (`owl_galore`) for one m x n parameter.
pub struct Galore<'ctx> {
    raw: *mut sys::owl_galore,
    ctx: &'ctx Context,
    rows: usize,
    cols: usize,
}

impl<'ctx> Galore<'ctx> {
    /// `opts.rows`/`opts.cols` give the parameter's shape.
    pub fn new(ctx: &'ctx Context, opts: &GaloreOptions) -> Result<Galore<'ctx>> {
        let mut raw = ptr::null_mut();
        ctx.check(unsafe { sys::owl_galore_create(ctx.raw, opts, &mut raw) })?;
        Ok(Galore { raw, ctx, rows: opts.rows as usize, cols: opts.cols as usize })
    }

    /// Shape of the projected gradient.
    pub fn lowrank_shape(&self) -> Result<(usize, usize)> {
        let (mut r, mut c) = (0u64, 0u64);
        self.ctx.check(unsafe { sys::owl_galore_lowrank_shape(self.raw, &mut r, &mut c) })?;
        Ok((r as usize, c as usize))
    }

    /// R = project(G) for the parameter's update number `iter`; returns R and
    /// whether the subspace was recomputed.
    pub fn project(&mut self, iter: u64, grad: &[f32]) -> Result<(Vec<f32>, bool)> {
        check_len("grad", grad.len(), self.rows, self.cols)?;
        let (r, c) = self.lowrank_shape()?;
        let mut out = vec![0f32; r * c];
        let g = tensor(grad.as_ptr(), self.rows, self.cols);
        let mut o = tensor(out.as_mut_ptr(), r, c);
        let mut refreshed = 0i32;
        self.ctx.check(unsafe { sys::owl_galore_project(self.raw, iter, &g, &mut o, &mut refreshed) })?;
        Ok((out, refreshed != 0))
    }
}

impl Drop for Galore<'_> {
    fn drop(&mut self) {
        unsafe { sys::owl_galore_free(self.raw) }
    }
}

/// AdamW state (`owl_adamw`): moments of `rows x cols`.
pub struct Adamw<'ctx> {
    raw: *mut sys::owl_adamw,
    ctx: &'ctx Context,
    rows: usize,
    cols: usize,
}

impl<'ctx> Adamw<'ctx> {
    /// Moments of `rows x cols`: the projector's low-rank shape for
    /// `lowrank_step`.
    pub fn new(ctx: &'ctx Context, opts: &AdamwOptions, rows: usize, cols: usize) -> Result<Adamw<'ctx>> {
        let mut raw = ptr::null_mut();
        ctx.check(unsafe { sys::owl_adamw_create(ctx.raw, opts, rows as u64, cols as u64, &mut raw) })?;
        Ok(Adamw { raw, ctx, rows, cols })
    }

    /// One fused GaLore step on `weight` (m x n, the projector's shape).
    pub fn lowrank_step(&mut self, proj: &mut Galore<'_>, weight: &mut [f32], grad: &[f32], lr: f64) -> Result<()> {
        check_len("weight", weight.len(), proj.rows, proj.cols)?;
        check_len("grad", grad.len(), proj.rows, proj.cols)?;
        let mut w = tensor(weight.as_mut_ptr(), proj.rows, proj.cols);
        let g = tensor(grad.as_ptr(), proj.rows, proj.cols);
        self.ctx.check(unsafe { sys::owl_adamw_lowrank(self.raw, proj.raw, &mut w, &g, lr) })
    }

    pub fn step_count(&self) -> u64 {
        unsafe { sys::owl_adamw_step_count(self.raw) }
    }

    /// The first (`which == 0`) or second (`1`) moment as f32.
    pub fn moment(&self, which: i32) -> Result<Vec<f32>> {
        let mut out = vec![0f32; self.rows * self.cols];
        let mut t = tensor(out.as_mut_ptr(), self.rows, self.cols);
        self.ctx.check(unsafe { sys::owl_adamw_get_moment(self.raw, which, &mut t) })?;
        Ok(out)
    }
}

impl Drop for Adamw<'_> {
    fn drop(&mut self) {
        unsafe { sys::owl_adamw_free(self.raw) }
    }
}

/// Settings of a whole-model optimizer.
#[derive(Clone, Debug)]
pub struct OptimizerConfig {
    pub method: i32,
    pub num_layers: u64,
    pub sampler: Option<SamplerConfig>,
    pub galore: Option<GaloreOptions>,
    pub adamw: Option<AdamwOptions>,
    pub max_grad_norm: f64,
}

struct Param {
    weight: Vec<f32>,
    grad: Vec<f32>,
}

/// A whole OwLore step behind one handle (`owl_optimizer`). The optimizer
/// owns each parameter's weight and gradient buffers (the C library keeps
/// pointers to them), so they live exactly as long as the handle.
pub struct Optimizer<'ctx> {
    raw: *mut sys::owl_optimizer,
    ctx: &'ctx Context,
    num_layers: usize,
    params: Vec<Param>,
}

impl<'ctx> Optimizer<'ctx> {
    pub fn new(ctx: &'ctx Context, cfg: &OptimizerConfig) -> Result<Optimizer<'ctx>> {
        let mut opts = sys::owl_optimizer_options {
            struct_size: 0,
            method: 0,
            frozen_policy: 0,
            num_layers: 0,
            sampler: ptr::null(),
            galore: ptr::null(),
            adamw: ptr::null(),
            max_grad_norm: 0.0,
            refresh_on_activation: 0,
            reserved: 0,
        };
        unsafe { sys::owl_optimizer_options_init(&mut opts, std::mem::size_of_val(&opts) as u64) };
        opts.method = cfg.method;
        opts.num_layers = cfg.num_layers;
        opts.max_grad_norm = cfg.max_grad_norm;
        // The library copies the options and what they point to at create.
        let sampler = cfg.sampler.as_ref().map(sampler_options);
        if let Some(s) = &sampler {
            opts.sampler = s;
        }
        if let Some(g) = &cfg.galore {
            opts.galore = g;
        }
        if let Some(a) = &cfg.adamw {
            opts.adamw = a;
        }
        let mut raw = ptr::null_mut();
        ctx.check(unsafe { sys::owl_optimizer_create(ctx.raw, &opts, &mut raw) })?;
        Ok(Optimizer { raw, ctx, num_layers: cfg.num_layers as usize, params: Vec::new() })
    }

    /// Registers a `rows x cols` parameter of `layer` (or OWL_LAYER_ALWAYS)
    /// with its initial weight; its gradient starts at zero. Returns its index.
    pub fn add_param(&mut self, layer: u64, weight: Vec<f32>, rows: usize, cols: usize, lowrank: bool) -> Result<usize> {
        check_len("weight", weight.len(), rows, cols)?;
        let mut p = Param { weight, grad: vec![0f32; rows * cols] };
        let w = tensor(p.weight.as_mut_ptr(), rows, cols);
        let g = tensor(p.grad.as_ptr(), rows, cols);
        let mut index = 0u64;
        self.ctx.check(unsafe {
            sys::owl_optimizer_add_param(self.raw, layer, &w, &g, lowrank as i32, &mut index)
        })?;
        // Moving the Vec moves only its header; the heap buffer stays put.
        self.params.push(p);
        Ok(index as usize)
    }

    pub fn weight(&self, index: usize) -> &[f32] {
        &self.params[index].weight
    }

    /// The gradient buffer the next step reads.
    pub fn grad_mut(&mut self, index: usize) -> &mut [f32] {
        &mut self.params[index].grad
    }

    /// The layers that train at the current step (mask, resampled).
    pub fn active_layers(&mut self) -> Result<(Vec<u8>, bool)> {
        let mut mask = vec![0u8; self.num_layers];
        let mut resampled = 0i32;
        self.ctx.check(unsafe {
            sys::owl_optimizer_active_layers(self.raw, mask.as_mut_ptr(), self.num_layers as u64, &mut resampled)
        })?;
        Ok((mask, resampled != 0))
    }

    pub fn step(&mut self, lr: f64) -> Result<()> {
        self.ctx.check(unsafe { sys::owl_optimizer_step(self.raw, lr) })
    }

    pub fn step_index(&self) -> u64 {
        unsafe { sys::owl_optimizer_step_index(self.raw) }
    }
}

impl Drop for Optimizer<'_> {
    fn drop(&mut self) {
        unsafe { sys::owl_optimizer_free(self.raw) }
    }
}
