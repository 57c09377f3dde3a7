"""PyTorch binding of libowlore through ctypes (stdlib + torch only).

OwloreOptimizer drives owl_optimizer (docs/optimizer.md) over the tensors'
own memory: the library reads the gradients PyTorch wrote and updates the
weights in place, so nothing is copied. compute_lod() measures each decoder
layer's outlier ratio (spec section 1) from forward hooks.

The shared library is found through, in order: the OWLORE_LIB environment
variable (a path), `pkg-config --variable=libdir owlore` + libowlore.so.0,
ctypes.util.find_library("owlore").
"""

import ctypes
import ctypes.util
import os
import subprocess

import torch

__all__ = [
    "OwloreError", "load_library", "Context", "OwloreOptimizer",
    "set_requires_grad", "compute_lod", "LAYER_ALWAYS",
]

# ---------------------------------------------------------------- constants
OWL_OK = 0
DTYPE_F32, DTYPE_BF16, DTYPE_F16, DTYPE_F64 = 0, 1, 2, 3
BACKEND_CPU, BACKEND_CUDA = 0, 1
WEIGHTS = {"owlore": 0, "uniform": 1, "decreasing": 2, "increasing": 3,
           "custom": 4}
LAWS = {"systematic": 0, "reference": 1, "bernoulli": 2}
PROJ = {"std": 0, "reverse_std": 1, "left": 2, "right": 3}
SVD = {"exact": 0, "randomized": 1}
SEMANTICS = {"galore": 0, "torch": 1}
MOMENTS = {"keep": 0, "reset": 1}
METHODS = {"owlore": 0, "owlore_full": 1, "lisa": 2, "galore": 3, "full": 4}
FROZEN = {"keep": 0, "reset": 1, "offload": 2, "free": 3}
LAYER_ALWAYS = 2**64 - 1  # OWL_LAYER_ALWAYS

_TORCH_DTYPES = {torch.float32: DTYPE_F32, torch.bfloat16: DTYPE_BF16,
                 torch.float16: DTYPE_F16, torch.float64: DTYPE_F64}

u64, i32, f64 = ctypes.c_uint64, ctypes.c_int32, ctypes.c_double


# ------------------------------------------------------------------ structs
# Field for field the declarations of include/owlore/owlore.h; the sizes are
# those lib/owlore.layout records for LP64, checked when the library loads.
class Tensor(ctypes.Structure):
    _fields_ = [("data", ctypes.c_void_p), ("rows", ctypes.c_int64),
                ("cols", ctypes.c_int64), ("row_stride", ctypes.c_int64),
                ("dtype", i32), ("flags", i32)]


class ContextOptions(ctypes.Structure):
    _fields_ = [("struct_size", u64), ("backend", i32), ("device", i32),
                ("num_threads", i32), ("reserved", i32)]


class SamplerOptions(ctypes.Structure):
    _fields_ = [("struct_size", u64), ("num_layers", u64), ("gamma", u64),
                ("period", u64), ("seed", u64), ("weight_mode", i32),
                ("law", i32), ("weights", ctypes.POINTER(f64))]


class GaloreOptions(ctypes.Structure):
    _fields_ = [("struct_size", u64), ("rows", u64), ("cols", u64),
                ("rank", u64), ("update_gap", u64), ("scale", f64),
                ("proj_type", i32), ("svd_method", i32),
                ("oversample", u64), ("power_iters", u64), ("seed", u64)]


class AdamwOptions(ctypes.Structure):
    _fields_ = [("struct_size", u64), ("beta1", f64), ("beta2", f64),
                ("eps", f64), ("weight_decay", f64), ("semantics", i32),
                ("moment_dtype", i32), ("on_refresh", i32),
                ("rounding", i32), ("seed", u64)]


class OptimizerOptions(ctypes.Structure):
    _fields_ = [("struct_size", u64), ("method", i32),
                ("frozen_policy", i32), ("num_layers", u64),
                ("sampler", ctypes.POINTER(SamplerOptions)),
                ("galore", ctypes.POINTER(GaloreOptions)),
                ("adamw", ctypes.POINTER(AdamwOptions)),
                ("max_grad_norm", f64), ("refresh_on_activation", i32),
                ("reserved", i32)]


class MemoryUsage(ctypes.Structure):
    _fields_ = [("struct_size", u64), ("device_moments", u64),
                ("device_projectors", u64), ("device_workspace", u64),
                ("host_moments", u64), ("host_projectors", u64),
                ("host_workspace", u64)]


# lib/owlore.layout's sizes (LP64).
STRUCT_SIZES = {Tensor: 40, ContextOptions: 24, SamplerOptions: 56,
                GaloreOptions: 80, AdamwOptions: 64, OptimizerOptions: 64,
                MemoryUsage: 56}


def check_struct_sizes():
    """Raises when a Structure's size differs from the header's layout."""
    if ctypes.sizeof(ctypes.c_void_p) != 8:
        raise OwloreError("libowlore's Python binding assumes an LP64 ABI")
    for cls, size in STRUCT_SIZES.items():
        if ctypes.sizeof(cls) != size:
            raise OwloreError(f"{cls.__name__} is {ctypes.sizeof(cls)} bytes, "
                              f"the header's layout says {size}")


class OwloreError(RuntimeError):
    """A failing libowlore call: its status name and the context's message."""

    def __init__(self, message, status=None, name=None):
        super().__init__(message)
        self.status = status
        self.name = name


# ------------------------------------------------------------------ library
_P = ctypes.c_void_p
_SIGNATURES = {
    # name: (restype, argtypes)
    "owl_version_string": (ctypes.c_char_p, []),
    "owl_status_name": (ctypes.c_char_p, [i32]),
    "owl_context_options_init": (i32, [ctypes.POINTER(ContextOptions), u64]),
    "owl_context_create": (i32, [ctypes.POINTER(_P),
                                 ctypes.POINTER(ContextOptions)]),
    "owl_context_free": (None, [_P]),
    "owl_context_set_stream": (i32, [_P, _P]),
    "owl_context_last_error": (ctypes.c_char_p, [_P]),
    "owl_tensor_init": (None, [ctypes.POINTER(Tensor), _P, i32,
                               ctypes.c_int64, ctypes.c_int64]),
    "owl_sampler_options_init": (i32, [ctypes.POINTER(SamplerOptions), u64]),
    "owl_galore_options_init": (i32, [ctypes.POINTER(GaloreOptions), u64]),
    "owl_adamw_options_init": (i32, [ctypes.POINTER(AdamwOptions), u64]),
    "owl_optimizer_options_init": (i32, [ctypes.POINTER(OptimizerOptions),
                                         u64]),
    "owl_optimizer_create": (i32, [_P, ctypes.POINTER(OptimizerOptions),
                                   ctypes.POINTER(_P)]),
    "owl_optimizer_free": (None, [_P]),
    "owl_optimizer_add_param": (i32, [_P, u64, ctypes.POINTER(Tensor),
                                      ctypes.POINTER(Tensor), i32,
                                      ctypes.POINTER(u64)]),
    "owl_optimizer_set_grad": (i32, [_P, u64, ctypes.POINTER(Tensor)]),
    "owl_optimizer_active_layers": (i32, [_P, ctypes.POINTER(ctypes.c_uint8),
                                          u64, ctypes.POINTER(i32)]),
    "owl_optimizer_step": (i32, [_P, f64]),
    "owl_optimizer_step_index": (u64, [_P]),
    "owl_memory_usage_init": (i32, [ctypes.POINTER(MemoryUsage), u64]),
    "owl_optimizer_memory": (i32, [_P, ctypes.POINTER(MemoryUsage)]),
    "owl_act_norm_accumulate": (i32, [_P, ctypes.POINTER(Tensor),
                                      ctypes.POINTER(Tensor)]),
    "owl_lod_compute": (i32, [_P, ctypes.POINTER(Tensor),
                              ctypes.POINTER(Tensor), u64, f64,
                              ctypes.POINTER(f64)]),
}

_lib = None


def _library_path():
    path = os.environ.get("OWLORE_LIB")
    if path:
        return path
    try:
        libdir = subprocess.run(
            ["pkg-config", "--variable=libdir", "owlore"], check=True,
            capture_output=True, text=True).stdout.strip()
        candidate = os.path.join(libdir, "libowlore.so.0")
        if libdir and os.path.exists(candidate):
            return candidate
    except (OSError, subprocess.CalledProcessError):
        pass
    found = ctypes.util.find_library("owlore")
    if found:
        return found
    raise OwloreError("libowlore not found: set OWLORE_LIB to its path")


def load_library():
    """Loads libowlore once, declares the signatures used here, checks the
    structs' sizes."""
    global _lib
    if _lib is None:
        check_struct_sizes()
        lib = ctypes.CDLL(_library_path())
        for name, (restype, argtypes) in _SIGNATURES.items():
            fn = getattr(lib, name)
            fn.restype = restype
            fn.argtypes = argtypes
        _lib = lib
    return _lib


def _init(lib_fn, cls):
    """A struct filled with its defaults by its *_init function."""
    s = cls()
    status = lib_fn(ctypes.byref(s), ctypes.sizeof(cls))
    if status != OWL_OK:
        raise OwloreError(f"{lib_fn.__name__}: "
                          f"{load_library().owl_status_name(status).decode()}",
                          status)
    return s


# ------------------------------------------------------------------ context
class Context:
    """An owl_context; every call made through it raises OwloreError on
    failure with the status's name and the context's last error."""

    def __init__(self, device=None, num_threads=0):
        self.lib = load_library()
        device = torch.device(device or "cpu")
        opts = _init(self.lib.owl_context_options_init, ContextOptions)
        opts.backend = BACKEND_CUDA if device.type == "cuda" else BACKEND_CPU
        opts.device = device.index or 0
        opts.num_threads = num_threads
        handle = _P()
        self.handle = None
        status = self.lib.owl_context_create(ctypes.byref(handle),
                                             ctypes.byref(opts))
        if status != OWL_OK:
            raise OwloreError("owl_context_create: " +
                              self.lib.owl_status_name(status).decode(),
                              status)
        self.handle = handle
        self.device = device

    def check(self, status, what):
        if status != OWL_OK:
            name = self.lib.owl_status_name(status).decode()
            msg = self.lib.owl_context_last_error(self.handle).decode()
            raise OwloreError(f"{what}: {name}: {msg}", status, name)

    def use_current_stream(self):
        """CUDA: enqueue later work on PyTorch's current stream."""
        if self.device.type == "cuda":
            stream = torch.cuda.current_stream(self.device).cuda_stream
            self.check(self.lib.owl_context_set_stream(self.handle, stream),
                       "owl_context_set_stream")

    def close(self):
        if self.handle is not None:
            self.lib.owl_context_free(self.handle)
            self.handle = None

    def __del__(self):
        self.close()


def tensor_view(t, what="tensor"):
    """An owl_tensor over a contiguous torch tensor's own memory: a vector is
    1 x n, a matrix rows x cols, more dimensions fold into the columns."""
    if t.dtype not in _TORCH_DTYPES:
        raise OwloreError(f"{what}: dtype {t.dtype} is not supported")
    if not t.is_contiguous():
        raise OwloreError(f"{what}: the tensor must be contiguous")
    rows = 1 if t.dim() <= 1 else t.shape[0]
    cols = t.numel() // rows if rows else 0
    view = Tensor()
    load_library().owl_tensor_init(ctypes.byref(view), t.data_ptr(),
                                   _TORCH_DTYPES[t.dtype], rows, cols)
    return view


# ---------------------------------------------------------------- optimizer
class OwloreOptimizer(torch.optim.Optimizer):
    """torch.optim.Optimizer over owl_optimizer.

    params: parameter groups (dicts) with 'params', 'layer' (a decoder layer
    index, or None for parameters trained at every step: embeddings, final
    norm, head) and 'lowrank' (GaLore path for a layer's matrices). Every
    group shares one learning rate: owl_optimizer_step takes one.

    Per step: mask = opt.active_layers(); set_requires_grad(layers, mask);
    forward; backward; opt.step(); opt.zero_grad(set_to_none=True).
    """

    def __init__(self, params, lr, num_layers, method="owlore", gamma=2,
                 period=50, seed=0, weights=None, weight_mode=None,
                 law="systematic", rank=128, update_gap=200, scale=1.0,
                 proj_type="std", betas=(0.9, 0.999), eps=1e-6,
                 weight_decay=0.0, semantics="galore", on_refresh="keep",
                 frozen_policy="keep", max_grad_norm=0.0,
                 refresh_on_activation=False, num_threads=0):
        defaults = dict(lr=lr, layer=None, lowrank=False)
        super().__init__(params, defaults)
        first = self.param_groups[0]["params"][0]
        self.ctx = Context(first.device, num_threads)
        self.lib = self.ctx.lib
        self.num_layers = num_layers

        so = _init(self.lib.owl_sampler_options_init, SamplerOptions)
        so.num_layers, so.gamma, so.period, so.seed = (num_layers, gamma,
                                                       period, seed)
        so.law = LAWS[law]
        if weight_mode is not None:
            so.weight_mode = WEIGHTS[weight_mode]
        if weights is not None:
            self._weights = (f64 * num_layers)(*[float(w) for w in weights])
            so.weights = ctypes.cast(self._weights, ctypes.POINTER(f64))
        go = _init(self.lib.owl_galore_options_init, GaloreOptions)
        go.rank, go.update_gap, go.scale = rank, update_gap, scale
        go.proj_type = PROJ[proj_type]
        ao = _init(self.lib.owl_adamw_options_init, AdamwOptions)
        ao.beta1, ao.beta2 = betas
        ao.eps, ao.weight_decay = eps, weight_decay
        ao.semantics = SEMANTICS[semantics]
        ao.on_refresh = MOMENTS[on_refresh]
        oo = _init(self.lib.owl_optimizer_options_init, OptimizerOptions)
        oo.method = METHODS[method]
        oo.frozen_policy = FROZEN[frozen_policy]
        oo.num_layers = num_layers
        oo.sampler = ctypes.pointer(so)
        oo.galore = ctypes.pointer(go)
        oo.adamw = ctypes.pointer(ao)
        oo.max_grad_norm = max_grad_norm
        oo.refresh_on_activation = int(refresh_on_activation)

        handle = _P()
        self.ctx.check(self.lib.owl_optimizer_create(
            self.ctx.handle, ctypes.byref(oo), ctypes.byref(handle)),
            "owl_optimizer_create")
        self.handle = handle

        # (param, layer or None, weight data_ptr, bound grad tensor)
        self._params = []
        for group in self.param_groups:
            layer = group["layer"]
            for p in group["params"]:
                self._register(p, layer, bool(group["lowrank"]))

    def _register(self, p, layer, lowrank):
        if p.dtype not in (torch.float32, torch.bfloat16, torch.float16):
            raise OwloreError(f"parameter {len(self._params)}: dtype {p.dtype}")
        if p.device != self.ctx.device:
            raise OwloreError(f"parameter {len(self._params)} is on "
                              f"{p.device}, the optimizer on {self.ctx.device}")
        w = tensor_view(p.data, f"parameter {len(self._params)}")
        owl_layer = LAYER_ALWAYS if layer is None else layer
        index = u64()
        self.ctx.check(self.lib.owl_optimizer_add_param(
            self.handle, owl_layer, ctypes.byref(w), None, int(lowrank),
            ctypes.byref(index)),
            f"owl_optimizer_add_param(parameter {len(self._params)})")
        self._params.append([p, layer, p.data_ptr(), None])

    def active_layers(self):
        """The layers training at this step, as a list of 0/1 of length L."""
        mask = (ctypes.c_uint8 * self.num_layers)()
        self.ctx.check(self.lib.owl_optimizer_active_layers(
            self.handle, mask, self.num_layers, None),
            "owl_optimizer_active_layers")
        return list(mask)

    def _bind_grads(self, mask):
        for i, entry in enumerate(self._params):
            p, layer, wptr, bound = entry
            if p.data_ptr() != wptr:
                raise OwloreError(f"parameter {i}'s storage moved; the "
                                  "optimizer updates the memory it registered")
            if layer is not None and not mask[layer]:
                continue  # frozen: the library does not read its gradient
            grad = p.grad
            if grad is None:
                # An active parameter that received no gradient gets a zero
                # one: the library needs a bound gradient for every update.
                grad = torch.zeros_like(p)
            if not grad.is_contiguous():
                grad = grad.contiguous()
            if bound is None or bound.data_ptr() != grad.data_ptr():
                g = tensor_view(grad, f"parameter {i}'s gradient")
                self.ctx.check(self.lib.owl_optimizer_set_grad(
                    self.handle, i, ctypes.byref(g)),
                    f"owl_optimizer_set_grad({i})")
            # Holding the tensor keeps the bound memory alive.
            entry[3] = grad

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        lrs = {g["lr"] for g in self.param_groups}
        if len(lrs) != 1:
            raise OwloreError(f"every group needs the same lr, got {lrs}")
        self.ctx.use_current_stream()
        self._bind_grads(self.active_layers())
        self.ctx.check(self.lib.owl_optimizer_step(self.handle, lrs.pop()),
                       "owl_optimizer_step")
        return loss

    def step_index(self):
        return self.lib.owl_optimizer_step_index(self.handle)

    def memory(self):
        """Bytes the optimizer holds now, by category (owl_memory_usage)."""
        usage = _init(self.lib.owl_memory_usage_init, MemoryUsage)
        self.ctx.check(self.lib.owl_optimizer_memory(
            self.handle, ctypes.byref(usage)), "owl_optimizer_memory")
        return {name: getattr(usage, name) for name, _ in usage._fields_[1:]}

    def close(self):
        if getattr(self, "handle", None) is not None:
            self.lib.owl_optimizer_free(self.handle)
            self.handle = None
        if getattr(self, "ctx", None) is not None:
            self.ctx.close()

    def __del__(self):
        self.close()


def set_requires_grad(model_layers, mask):
    """Turns gradients on for the layers whose mask entry is 1, off for the
    others (the always-trained parameters are the caller's)."""
    for layer, on in zip(model_layers, mask):
        for p in layer.parameters():
            p.requires_grad_(bool(on))


# ---------------------------------------------------------------------- LOD
@torch.no_grad()
def compute_lod(model, layers, linear_names, calib_batches, M=13.0):
    """Outlier ratio D_l of each decoder layer in `layers` (spec section 1).

    linear_names: attribute paths of the nn.Linear modules in each layer
    (e.g. ["attn.q", "mlp.up"]); None takes every nn.Linear in the layer.
    calib_batches: inputs passed to model(batch). Returns a list of floats.
    """
    ctx = Context("cpu")
    lib = ctx.lib
    per_layer = []  # [(linear, sumsq f64 tensor)]
    hooks = []

    def hook_for(sumsq):
        def hook(module, inputs):
            x = inputs[0].detach().reshape(-1, module.in_features)
            x = x.to(device="cpu", dtype=torch.float32).contiguous()
            xv, sv = tensor_view(x, "activation"), tensor_view(sumsq)
            ctx.check(lib.owl_act_norm_accumulate(ctx.handle, ctypes.byref(xv),
                                                  ctypes.byref(sv)),
                      "owl_act_norm_accumulate")
        return hook

    for layer in layers:
        if linear_names is None:
            linears = [m for m in layer.modules()
                       if isinstance(m, torch.nn.Linear)]
        else:
            linears = [layer.get_submodule(n) for n in linear_names]
        entries = []
        for lin in linears:
            sumsq = torch.zeros(lin.in_features, dtype=torch.float64)
            hooks.append(lin.register_forward_pre_hook(hook_for(sumsq)))
            entries.append((lin, sumsq))
        per_layer.append(entries)
    try:
        for batch in calib_batches:
            model(batch)
    finally:
        for h in hooks:
            h.remove()

    ratios = []
    for entries in per_layer:
        weights = [lin.weight.detach().to("cpu", torch.float32).contiguous()
                   for lin, _ in entries]
        wv = (Tensor * len(entries))(*[tensor_view(w) for w in weights])
        sv = (Tensor * len(entries))(*[tensor_view(s) for _, s in entries])
        ratio = f64()
        ctx.check(lib.owl_lod_compute(ctx.handle, wv, sv, len(entries),
                                      float(M), ctypes.byref(ratio)),
                  "owl_lod_compute")
        ratios.append(ratio.value)
    ctx.close()
    return ratios
