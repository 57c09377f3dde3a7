package owlore

// Checks against closed forms computed here (see the Rust tests'
// explanation in examples/rust/owlore/tests/closed_form.rs): G (4 x 3) is
// zero but for G00 = 3, G11 = -2, G22 = 1, so at rank 2 the right
// projection keeps the first two unit vectors, R is G's first two columns,
// and one AdamW step from zero moments moves W by
// -eta*alpha*(1-b1)R/(sqrt((1-b2)R^2)+eps) there, eta = lr sqrt(1-b2)/(1-b1).

import (
	"errors"
	"math"
	"strings"
	"testing"
)

const (
	m, n, rank  = 4, 3, 2
	lr, alpha   = 0.01, 0.25
	b1, b2, eps = 0.9, 0.999, 1e-6
)

func grad() []float32 {
	g := make([]float32, m*n)
	g[0], g[n+1], g[2*n+2] = 3, -2, 1
	return g
}

func weight0() []float32 {
	w := make([]float32, m*n)
	for i := range w {
		w[i] = 0.5 - 0.125*float32(i)
	}
	return w
}

func adamN(x float64) float64 { return (1 - b1) * x / (math.Sqrt((1-b2)*x*x) + eps) }

func eta() float64 { return lr * math.Sqrt(1-b2) / (1 - b1) }

func expectedWeight() []float64 {
	g, w := grad(), weight0()
	out := make([]float64, m*n)
	for i := range w {
		out[i] = float64(w[i])
		if i%n < rank {
			out[i] -= eta() * alpha * adamN(float64(g[i]))
		}
	}
	return out
}

func assertClose(t *testing.T, what string, got []float32, want []float64) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d values, expected %d", what, len(got), len(want))
	}
	for k := range got {
		if math.Abs(float64(got[k])-want[k]) > 1e-5*(1+math.Abs(want[k])) {
			t.Errorf("%s[%d] = %g, expected %g", what, k, got[k], want[k])
		}
	}
}

func adamwOpts() AdamwOptions {
	return AdamwOptions{Beta1: b1, Beta2: b2, Eps: eps, Semantics: AdamwGaLore}
}

func newContext(t *testing.T) *Context {
	ctx, err := NewCPUContext(1)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ctx.Close)
	return ctx
}

func TestLowrankAdamwStep(t *testing.T) {
	ctx := newContext(t)
	p, err := ctx.NewGalore(m, n, rank, 1, alpha, ProjSTD)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	g := grad()
	r, refreshed, err := p.Project(0, g)
	if err != nil {
		t.Fatal(err)
	}
	if !refreshed {
		t.Error("the first projection did not compute the subspace")
	}
	wantR := make([]float64, m*rank)
	for k := range wantR {
		wantR[k] = float64(g[(k/rank)*n+k%rank])
	}
	assertClose(t, "R", r, wantR)

	lr_rows, lr_cols, err := p.LowrankShape()
	if err != nil || lr_rows != m || lr_cols != rank {
		t.Fatalf("low-rank shape %dx%d (%v)", lr_rows, lr_cols, err)
	}
	a, err := ctx.NewAdamw(adamwOpts(), lr_rows, lr_cols)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	w := weight0()
	if err := a.LowrankStep(p, w, g, lr); err != nil {
		t.Fatal(err)
	}
	if a.StepCount() != 1 {
		t.Errorf("step count %d", a.StepCount())
	}
	assertClose(t, "W", w, expectedWeight())
	mom, vel := make([]float64, len(wantR)), make([]float64, len(wantR))
	for k, x := range wantR {
		mom[k], vel[k] = (1-b1)*x, (1-b2)*x*x
	}
	got, err := a.Moment(0)
	if err != nil {
		t.Fatal(err)
	}
	assertClose(t, "m", got, mom)
	if got, err = a.Moment(1); err != nil {
		t.Fatal(err)
	}
	assertClose(t, "v", got, vel)
}

func TestOptimizerGaloreStep(t *testing.T) {
	ctx := newContext(t)
	o, err := ctx.NewOptimizer(MethodGaLore, 1, rank, 1, alpha, adamwOpts())
	if err != nil {
		t.Fatal(err)
	}
	defer o.Close()
	low, err := o.AddParam(0, weight0(), m, n, true)
	if err != nil {
		t.Fatal(err)
	}
	bias0 := []float32{1, -2, 0.5}
	full, err := o.AddParam(LayerAlways, bias0, 1, 3, false)
	if err != nil {
		t.Fatal(err)
	}
	mask, _, err := o.ActiveLayers()
	if err != nil || len(mask) != 1 || mask[0] != 1 {
		t.Fatalf("GALORE trains every layer: mask %v (%v)", mask, err)
	}
	copy(o.Grad(low), grad())
	gb := []float32{0.25, -4, 2}
	copy(o.Grad(full), gb)
	if err := o.Step(lr); err != nil {
		t.Fatal(err)
	}
	if o.StepIndex() != 1 {
		t.Errorf("step index %d", o.StepIndex())
	}
	assertClose(t, "W", o.Weight(low), expectedWeight())
	wantB := make([]float64, 3)
	for i := range wantB {
		wantB[i] = float64(bias0[i]) - eta()*adamN(float64(gb[i]))
	}
	assertClose(t, "bias", o.Weight(full), wantB)
}

func TestUniformSamplerGammaEqualsL(t *testing.T) {
	ctx := newContext(t)
	s, err := ctx.NewSampler(5, 5, 3, 7, WeightsUniform, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for step, wantResampled := range []bool{true, false, false, true} {
		mask, active, resampled, err := s.Step(uint64(step))
		if err != nil {
			t.Fatal(err)
		}
		if active != 5 || resampled != wantResampled || string(mask) != "\x01\x01\x01\x01\x01" {
			t.Errorf("step %d: mask %v, %d active, resampled %v", step, mask, active, resampled)
		}
	}
}

func TestSystematicSamplerDrawsGamma(t *testing.T) {
	ctx := newContext(t)
	s, err := ctx.NewSampler(6, 2, 1, 11, WeightsCustom, []float64{1, 2, 3, 0, 5, 1.5})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for step := uint64(0); step < 20; step++ {
		mask, active, _, err := s.Step(step)
		if err != nil {
			t.Fatal(err)
		}
		sum := 0
		for _, b := range mask {
			sum += int(b)
		}
		if active != 2 || sum != 2 || mask[3] != 0 {
			t.Errorf("step %d: mask %v, %d active", step, mask, active)
		}
	}
}

func TestErrorsCarryTheMessage(t *testing.T) {
	ctx := newContext(t)
	_, err := ctx.NewGalore(m, n, 4, 1, alpha, ProjSTD) // rank > min(4, 3)
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("rank 4 on a 4x3 matrix: %v", err)
	}
	if e.Status != ErrInvalidArgument || e.Name != "OWL_ERR_INVALID_ARGUMENT" {
		t.Errorf("status %d %s", e.Status, e.Name)
	}
	if !strings.Contains(e.Message, "rank") || e.Message != ctx.LastError() {
		t.Errorf("message %q, context says %q", e.Message, ctx.LastError())
	}
	if !strings.HasPrefix(err.Error(), "OWL_ERR_INVALID_ARGUMENT: ") {
		t.Errorf("Error() = %q", err.Error())
	}
	if StatusName(OK) != "OWL_OK" || StatusString(ErrShape) == "" {
		t.Error("status names")
	}
}
