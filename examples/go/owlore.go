// Package owlore is a cgo binding of libowlore (include/owlore/owlore.h),
// found through pkg-config. Handles are freed with Close; failed calls
// return an *Error carrying the status and the context's message.
//
// cgo forbids C from keeping Go pointers, so the small C helpers below
// build the owl_tensor descriptors on the C side from plain float
// pointers, and the optimizer (which keeps pointers to its parameters)
// holds their weights and gradients in C memory.
package owlore

/*
#cgo pkg-config: owlore
#include <stdlib.h>
#include <owlore/owlore.h>

static owl_status go_galore_create(owl_context *ctx, uint64_t m, uint64_t n,
		uint64_t rank, uint64_t gap, double scale, owl_proj_type type,
		owl_galore **out) {
	owl_galore_options o;
	owl_status st = owl_galore_options_init(&o, sizeof o);
	if (st != OWL_OK) return st;
	o.rows = m; o.cols = n; o.rank = rank; o.update_gap = gap;
	o.scale = scale; o.proj_type = type;
	return owl_galore_create(ctx, &o, out);
}

static owl_status go_adamw_options(owl_adamw_options *o, double b1, double b2,
		double eps, double wd, owl_adamw_semantics sem) {
	owl_status st = owl_adamw_options_init(o, sizeof *o);
	if (st != OWL_OK) return st;
	o->beta1 = b1; o->beta2 = b2; o->eps = eps; o->weight_decay = wd;
	o->semantics = sem;
	return OWL_OK;
}

static owl_status go_galore_project(owl_galore *p, uint64_t iter,
		const float *g, int64_t m, int64_t n, float *out, int64_t r,
		int64_t c, int32_t *refreshed) {
	owl_tensor gt, ot;
	owl_tensor_init(&gt, (void *)g, OWL_DTYPE_F32, m, n);
	owl_tensor_init(&ot, out, OWL_DTYPE_F32, r, c);
	return owl_galore_project(p, iter, &gt, &ot, refreshed);
}

static owl_status go_adamw_lowrank(owl_adamw *a, owl_galore *p, float *w,
		const float *g, int64_t m, int64_t n, double lr) {
	owl_tensor wt, gt;
	owl_tensor_init(&wt, w, OWL_DTYPE_F32, m, n);
	owl_tensor_init(&gt, (void *)g, OWL_DTYPE_F32, m, n);
	return owl_adamw_lowrank(a, p, &wt, &gt, lr);
}

static owl_status go_adamw_get_moment(owl_adamw *a, int32_t which, float *out,
		int64_t r, int64_t c) {
	owl_tensor t;
	owl_tensor_init(&t, out, OWL_DTYPE_F32, r, c);
	return owl_adamw_get_moment(a, which, &t);
}

static owl_status go_sampler_create(owl_context *ctx, uint64_t layers,
		uint64_t gamma, uint64_t period, uint64_t seed, owl_weight_mode mode,
		const double *weights, owl_sampler **out) {
	owl_sampler_options o;
	owl_status st = owl_sampler_options_init(&o, sizeof o);
	if (st != OWL_OK) return st;
	o.num_layers = layers; o.gamma = gamma; o.period = period; o.seed = seed;
	o.weight_mode = mode; o.weights = weights;
	return owl_sampler_create(ctx, &o, out);
}

static owl_status go_optimizer_create(owl_context *ctx, owl_method method,
		uint64_t layers, uint64_t rank, uint64_t gap, double scale,
		const owl_adamw_options *adamw, owl_optimizer **out) {
	owl_optimizer_options o;
	owl_galore_options g;
	owl_status st = owl_optimizer_options_init(&o, sizeof o);
	if (st != OWL_OK) return st;
	st = owl_galore_options_init(&g, sizeof g);
	if (st != OWL_OK) return st;
	g.rank = rank; g.update_gap = gap; g.scale = scale;
	o.method = method; o.num_layers = layers; o.galore = &g; o.adamw = adamw;
	return owl_optimizer_create(ctx, &o, out);
}

static owl_status go_optimizer_add_param(owl_optimizer *opt, uint64_t layer,
		float *w, float *g, int64_t m, int64_t n, int32_t lowrank,
		uint64_t *index) {
	owl_tensor wt, gt;
	owl_tensor_init(&wt, w, OWL_DTYPE_F32, m, n);
	owl_tensor_init(&gt, g, OWL_DTYPE_F32, m, n);
	return owl_optimizer_add_param(opt, layer, &wt, &gt, lowrank, index);
}
*/
import "C"

import (
	"fmt"
	"unsafe"
)

// Status codes and enumerations used by this package (owlore.h).
const (
	OK                 = 0
	ErrInvalidArgument = 1
	ErrShape           = 3

	ProjSTD   = 0
	ProjLeft  = 2
	ProjRight = 3

	WeightsOwLore  = 0
	WeightsUniform = 1
	WeightsCustom  = 4

	AdamwGaLore = 0
	AdamwTorch  = 1

	MethodOwLore = 0
	MethodLISA   = 2
	MethodGaLore = 3
	MethodFull   = 4

	LayerAlways = ^uint64(0)
)

// Error is a failed call: its status, the status's name and the message
// the library left on the context.
type Error struct {
	Status  int
	Name    string
	Message string
}

func (e *Error) Error() string {
	if e.Message == "" {
		return e.Name + ": " + StatusString(e.Status)
	}
	return e.Name + ": " + e.Message
}

// StatusName is the stable name of a status ("OWL_ERR_SHAPE").
func StatusName(s int) string { return C.GoString(C.owl_status_name(C.owl_status(s))) }

// StatusString is the fixed sentence describing a status.
func StatusString(s int) string { return C.GoString(C.owl_status_string(C.owl_status(s))) }

// Version of the library actually loaded.
func Version() string { return C.GoString(C.owl_version_string()) }

func statusError(st C.owl_status, ctx *C.owl_context) error {
	if st == C.OWL_OK {
		return nil
	}
	e := &Error{Status: int(st), Name: StatusName(int(st))}
	if ctx != nil {
		e.Message = C.GoString(C.owl_context_last_error(ctx))
	}
	return e
}

func checkLen(what string, n, rows, cols int) error {
	if n != rows*cols {
		return &Error{Status: ErrShape, Name: StatusName(ErrShape),
			Message: fmt.Sprintf("%s holds %d values, not %dx%d", what, n, rows, cols)}
	}
	return nil
}

func f32ptr(s []float32) *C.float {
	if len(s) == 0 {
		return nil
	}
	return (*C.float)(unsafe.Pointer(&s[0]))
}

// Context is where the library computes (CPU backend). Close it after
// every handle made from it.
type Context struct{ c *C.owl_context }

// NewCPUContext makes a CPU context; threads == 0 uses every core.
func NewCPUContext(threads int) (*Context, error) {
	var o C.owl_context_options
	if st := C.owl_context_options_init(&o, C.uint64_t(unsafe.Sizeof(o))); st != C.OWL_OK {
		return nil, statusError(st, nil)
	}
	o.num_threads = C.int32_t(threads)
	var c *C.owl_context
	if st := C.owl_context_create(&c, &o); st != C.OWL_OK {
		return nil, statusError(st, nil)
	}
	return &Context{c}, nil
}

// Close frees the context; safe to call twice.
func (x *Context) Close() {
	C.owl_context_free(x.c)
	x.c = nil
}

// LastError is the message of the last failing call ("" if none).
func (x *Context) LastError() string { return C.GoString(C.owl_context_last_error(x.c)) }

// Galore is a GaLore projector for one rows x cols parameter.
type Galore struct {
	p          *C.owl_galore
	ctx        *Context
	rows, cols int
}

// NewGalore makes a projector of the given rank, update gap T and scale.
func (x *Context) NewGalore(rows, cols, rank, updateGap int, scale float64, projType int) (*Galore, error) {
	var p *C.owl_galore
	st := C.go_galore_create(x.c, C.uint64_t(rows), C.uint64_t(cols), C.uint64_t(rank),
		C.uint64_t(updateGap), C.double(scale), C.owl_proj_type(projType), &p)
	if err := statusError(st, x.c); err != nil {
		return nil, err
	}
	return &Galore{p, x, rows, cols}, nil
}

// Close frees the projector.
func (g *Galore) Close() {
	C.owl_galore_free(g.p)
	g.p = nil
}

// LowrankShape is the shape of the projected gradient.
func (g *Galore) LowrankShape() (int, int, error) {
	var r, c C.uint64_t
	if err := statusError(C.owl_galore_lowrank_shape(g.p, &r, &c), g.ctx.c); err != nil {
		return 0, 0, err
	}
	return int(r), int(c), nil
}

// Project returns R = project(G) for update number iter and whether the
// subspace was recomputed.
func (g *Galore) Project(iter uint64, grad []float32) ([]float32, bool, error) {
	if err := checkLen("grad", len(grad), g.rows, g.cols); err != nil {
		return nil, false, err
	}
	r, c, err := g.LowrankShape()
	if err != nil {
		return nil, false, err
	}
	out := make([]float32, r*c)
	var refreshed C.int32_t
	st := C.go_galore_project(g.p, C.uint64_t(iter), f32ptr(grad), C.int64_t(g.rows),
		C.int64_t(g.cols), f32ptr(out), C.int64_t(r), C.int64_t(c), &refreshed)
	if err := statusError(st, g.ctx.c); err != nil {
		return nil, false, err
	}
	return out, refreshed != 0, nil
}

// AdamwOptions are the AdamW hyper-parameters this package sets.
type AdamwOptions struct {
	Beta1, Beta2, Eps, WeightDecay float64
	Semantics                      int
}

// DefaultAdamwOptions are the library's defaults.
func DefaultAdamwOptions() AdamwOptions {
	return AdamwOptions{Beta1: 0.9, Beta2: 0.999, Eps: 1e-6, Semantics: AdamwGaLore}
}

func (a AdamwOptions) c() (C.owl_adamw_options, C.owl_status) {
	var o C.owl_adamw_options
	st := C.go_adamw_options(&o, C.double(a.Beta1), C.double(a.Beta2), C.double(a.Eps),
		C.double(a.WeightDecay), C.owl_adamw_semantics(a.Semantics))
	return o, st
}

// Adamw is AdamW state for moments of rows x cols.
type Adamw struct {
	a          *C.owl_adamw
	ctx        *Context
	rows, cols int
}

// NewAdamw makes AdamW state; for LowrankStep the shape is the projector's
// low-rank shape.
func (x *Context) NewAdamw(opts AdamwOptions, rows, cols int) (*Adamw, error) {
	o, st := opts.c()
	if err := statusError(st, nil); err != nil {
		return nil, err
	}
	var a *C.owl_adamw
	st = C.owl_adamw_create(x.c, &o, C.uint64_t(rows), C.uint64_t(cols), &a)
	if err := statusError(st, x.c); err != nil {
		return nil, err
	}
	return &Adamw{a, x, rows, cols}, nil
}

// Close frees the state.
func (a *Adamw) Close() {
	C.owl_adamw_free(a.a)
	a.a = nil
}

// LowrankStep is one fused GaLore step on weight (the projector's shape).
func (a *Adamw) LowrankStep(p *Galore, weight, grad []float32, lr float64) error {
	if err := checkLen("weight", len(weight), p.rows, p.cols); err != nil {
		return err
	}
	if err := checkLen("grad", len(grad), p.rows, p.cols); err != nil {
		return err
	}
	st := C.go_adamw_lowrank(a.a, p.p, f32ptr(weight), f32ptr(grad), C.int64_t(p.rows),
		C.int64_t(p.cols), C.double(lr))
	return statusError(st, a.ctx.c)
}

// StepCount is the number of updates taken.
func (a *Adamw) StepCount() uint64 { return uint64(C.owl_adamw_step_count(a.a)) }

// Moment copies out m (which == 0) or v (1).
func (a *Adamw) Moment(which int) ([]float32, error) {
	out := make([]float32, a.rows*a.cols)
	st := C.go_adamw_get_moment(a.a, C.int32_t(which), f32ptr(out), C.int64_t(a.rows), C.int64_t(a.cols))
	if err := statusError(st, a.ctx.c); err != nil {
		return nil, err
	}
	return out, nil
}

// Sampler draws the layers that train in each period.
type Sampler struct {
	s      *C.owl_sampler
	ctx    *Context
	layers int
}

// NewSampler makes a sampler (systematic law); weights is needed for
// WeightsOwLore and WeightsCustom, else nil.
func (x *Context) NewSampler(layers, gamma, period int, seed uint64, mode int, weights []float64) (*Sampler, error) {
	var w *C.double
	if len(weights) > 0 {
		w = (*C.double)(unsafe.Pointer(&weights[0])) // copied at create
	}
	var s *C.owl_sampler
	st := C.go_sampler_create(x.c, C.uint64_t(layers), C.uint64_t(gamma), C.uint64_t(period),
		C.uint64_t(seed), C.owl_weight_mode(mode), w, &s)
	if err := statusError(st, x.c); err != nil {
		return nil, err
	}
	return &Sampler{s, x, layers}, nil
}

// Close frees the sampler.
func (s *Sampler) Close() {
	C.owl_sampler_free(s.s)
	s.s = nil
}

// Step returns the mask of active layers at global step, how many are
// active, and whether the step starts a period.
func (s *Sampler) Step(step uint64) ([]byte, uint64, bool, error) {
	mask := make([]byte, s.layers)
	var n C.uint64_t
	var res C.int32_t
	st := C.owl_sampler_step(s.s, C.uint64_t(step), (*C.uint8_t)(unsafe.Pointer(&mask[0])), &n, &res)
	if err := statusError(st, s.ctx.c); err != nil {
		return nil, 0, false, err
	}
	return mask, uint64(n), res != 0, nil
}

type param struct {
	w, g unsafe.Pointer // C memory: the library keeps these pointers
	n    int
}

// Optimizer runs a whole OwLore step; it owns its parameters' weights and
// gradients in C memory, seen from Go through Weight and Grad.
type Optimizer struct {
	o      *C.owl_optimizer
	ctx    *Context
	layers int
	params []param
}

// NewOptimizer makes an optimizer of the given method over layers decoder
// layers, with GaLore rank, update gap and scale for low-rank parameters.
func (x *Context) NewOptimizer(method, layers, rank, updateGap int, scale float64, adamw AdamwOptions) (*Optimizer, error) {
	ao, st := adamw.c()
	if err := statusError(st, nil); err != nil {
		return nil, err
	}
	var o *C.owl_optimizer
	st = C.go_optimizer_create(x.c, C.owl_method(method), C.uint64_t(layers), C.uint64_t(rank),
		C.uint64_t(updateGap), C.double(scale), &ao, &o)
	if err := statusError(st, x.c); err != nil {
		return nil, err
	}
	return &Optimizer{o: o, ctx: x, layers: layers}, nil
}

// Close frees the optimizer and its parameters' buffers.
func (o *Optimizer) Close() {
	C.owl_optimizer_free(o.o)
	o.o = nil
	for _, p := range o.params {
		C.free(p.w)
		C.free(p.g)
	}
	o.params = nil
}

// AddParam registers a rows x cols parameter of layer (or LayerAlways),
// initialised from weight, its gradient zero; returns its index.
func (o *Optimizer) AddParam(layer uint64, weight []float32, rows, cols int, lowrank bool) (int, error) {
	if err := checkLen("weight", len(weight), rows, cols); err != nil {
		return 0, err
	}
	bytes := C.size_t(rows * cols * 4)
	p := param{w: C.malloc(bytes), g: C.calloc(C.size_t(rows*cols), 4), n: rows * cols}
	if p.w == nil || p.g == nil {
		C.free(p.w)
		C.free(p.g)
		return 0, &Error{Status: 5, Name: StatusName(5), Message: "cannot allocate a parameter"}
	}
	copy(unsafe.Slice((*float32)(p.w), p.n), weight)
	lr := C.int32_t(0)
	if lowrank {
		lr = 1
	}
	var index C.uint64_t
	st := C.go_optimizer_add_param(o.o, C.uint64_t(layer), (*C.float)(p.w), (*C.float)(p.g),
		C.int64_t(rows), C.int64_t(cols), lr, &index)
	if err := statusError(st, o.ctx.c); err != nil {
		C.free(p.w)
		C.free(p.g)
		return 0, err
	}
	o.params = append(o.params, p)
	return int(index), nil
}

// Weight is parameter i's weight (valid until Close).
func (o *Optimizer) Weight(i int) []float32 {
	return unsafe.Slice((*float32)(o.params[i].w), o.params[i].n)
}

// Grad is parameter i's gradient buffer, read by the next Step.
func (o *Optimizer) Grad(i int) []float32 {
	return unsafe.Slice((*float32)(o.params[i].g), o.params[i].n)
}

// ActiveLayers is the mask of layers that train at the current step and
// whether the step starts a period.
func (o *Optimizer) ActiveLayers() ([]byte, bool, error) {
	mask := make([]byte, o.layers)
	var res C.int32_t
	st := C.owl_optimizer_active_layers(o.o, (*C.uint8_t)(unsafe.Pointer(&mask[0])),
		C.uint64_t(o.layers), &res)
	if err := statusError(st, o.ctx.c); err != nil {
		return nil, false, err
	}
	return mask, res != 0, nil
}

// Step updates the active parameters with learning rate lr.
func (o *Optimizer) Step(lr float64) error {
	return statusError(C.owl_optimizer_step(o.o, C.double(lr)), o.ctx.c)
}

// StepIndex is the number of steps taken.
func (o *Optimizer) StepIndex() uint64 { return uint64(C.owl_optimizer_step_index(o.o)) }
