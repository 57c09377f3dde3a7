//! Checks the bindings against closed forms computed here, independently of
//! the library.
//!
//! GaLore step: G (4 x 3) is zero except G[0][0] = 3, G[1][1] = -2,
//! G[2][2] = 1, so its right singular vectors are the unit vectors, ordered
//! by |G_ii|. At rank 2 the STD projection (m >= n: right) keeps Q = [e0; e1]
//! (signs canonical: largest entry positive), R = G Q^T is G's first two
//! columns, and one AdamW step from zero moments gives m = (1-b1) R,
//! v = (1-b2) R^2, N = m / (sqrt(v) + eps), eta = lr sqrt(1-b2) / (1-b1),
//! W <- W - eta * alpha * N Q (nothing changes in column 2).
use owlore::*;

const M: usize = 4;
const N: usize = 3;
const RANK: usize = 2;
const LR: f64 = 0.01;
const ALPHA: f64 = 0.25;
const B1: f64 = 0.9;
const B2: f64 = 0.999;
const EPS: f64 = 1e-6;

fn grad() -> Vec<f32> {
    let mut g = vec![0f32; M * N];
    g[0] = 3.0;
    g[N + 1] = -2.0;
    g[2 * N + 2] = 1.0;
    g
}

fn weight0() -> Vec<f32> {
    (0..M * N).map(|i| 0.5 - 0.125 * i as f32).collect()
}

fn adam_n(x: f64) -> f64 {
    (1.0 - B1) * x / (((1.0 - B2) * x * x).sqrt() + EPS)
}

fn eta() -> f64 {
    LR * (1.0 - B2).sqrt() / (1.0 - B1)
}

/// The expected weight after one low-rank step.
fn expected_lowrank_weight() -> Vec<f64> {
    let g = grad();
    let w = weight0();
    let mut out: Vec<f64> = w.iter().map(|&x| x as f64).collect();
    for i in 0..M {
        for j in 0..RANK {
            out[i * N + j] -= eta() * ALPHA * adam_n(g[i * N + j] as f64);
        }
    }
    out
}

fn assert_close(what: &str, got: &[f32], want: &[f64], tol: f64) {
    assert_eq!(got.len(), want.len(), "{}: length", what);
    for (k, (&g, &w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g as f64 - w).abs() <= tol * (1.0 + w.abs()),
            "{}[{}] = {}, expected {}",
            what,
            k,
            g,
            w
        );
    }
}

fn galore_opts() -> GaloreOptions {
    let mut g = galore_defaults();
    g.rows = M as u64;
    g.cols = N as u64;
    g.rank = RANK as u64;
    g.update_gap = 1;
    g.scale = ALPHA;
    g.proj_type = OWL_PROJ_STD;
    g
}

fn adamw_opts() -> AdamwOptions {
    let mut a = adamw_defaults();
    a.beta1 = B1;
    a.beta2 = B2;
    a.eps = EPS;
    a.weight_decay = 0.0;
    a.semantics = OWL_ADAMW_GALORE;
    a
}

#[test]
fn lowrank_adamw_step_matches_closed_form() {
    let ctx = Context::cpu(1).expect("context");
    let mut proj = Galore::new(&ctx, &galore_opts()).expect("galore");
    assert_eq!(proj.lowrank_shape().unwrap(), (M, RANK));

    let g = grad();
    let (r, refreshed) = proj.project(0, &g).expect("project");
    assert!(refreshed, "the first projection computes the subspace");
    let want_r: Vec<f64> = (0..M * RANK).map(|k| g[(k / RANK) * N + k % RANK] as f64).collect();
    assert_close("R", &r, &want_r, 1e-5);

    let (lr_rows, lr_cols) = proj.lowrank_shape().unwrap();
    let mut adam = Adamw::new(&ctx, &adamw_opts(), lr_rows, lr_cols).expect("adamw");
    let mut w = weight0();
    adam.lowrank_step(&mut proj, &mut w, &g, LR).expect("lowrank step");
    assert_eq!(adam.step_count(), 1);
    assert_close("W", &w, &expected_lowrank_weight(), 1e-5);

    let m: Vec<f64> = want_r.iter().map(|x| (1.0 - B1) * x).collect();
    let v: Vec<f64> = want_r.iter().map(|x| (1.0 - B2) * x * x).collect();
    assert_close("m", &adam.moment(0).unwrap(), &m, 1e-5);
    assert_close("v", &adam.moment(1).unwrap(), &v, 1e-5);
}

#[test]
fn optimizer_galore_step_matches_closed_form() {
    let ctx = Context::cpu(1).expect("context");
    let cfg = OptimizerConfig {
        method: OWL_METHOD_GALORE,
        num_layers: 1,
        sampler: None,
        galore: Some(galore_opts()),
        adamw: Some(adamw_opts()),
        max_grad_norm: 0.0,
    };
    let mut opt = Optimizer::new(&ctx, &cfg).expect("optimizer");
    let lowrank = opt.add_param(0, weight0(), M, N, true).expect("add lowrank");
    // A full-rank parameter trained at every step (an embedding, say).
    let bias0 = vec![1.0f32, -2.0, 0.5];
    let full = opt.add_param(OWL_LAYER_ALWAYS, bias0.clone(), 1, 3, false).expect("add full");
    assert_eq!((lowrank, full), (0, 1));

    let (mask, resampled) = opt.active_layers().expect("active layers");
    assert_eq!(mask, vec![1u8], "GALORE trains every layer");
    let _ = resampled;

    opt.grad_mut(lowrank).copy_from_slice(&grad());
    let gb = [0.25f32, -4.0, 2.0];
    opt.grad_mut(full).copy_from_slice(&gb);
    opt.step(LR).expect("step");
    assert_eq!(opt.step_index(), 1);

    assert_close("W", opt.weight(lowrank), &expected_lowrank_weight(), 1e-5);
    // Full rank: P = identity, elementwise Adam.
    let want_b: Vec<f64> = bias0
        .iter()
        .zip(gb.iter())
        .map(|(&b, &g)| b as f64 - eta() * adam_n(g as f64))
        .collect();
    assert_close("bias", opt.weight(full), &want_b, 1e-5);
}

#[test]
fn uniform_sampler_with_gamma_equal_to_l_selects_every_layer() {
    let ctx = Context::cpu(1).expect("context");
    let cfg = SamplerConfig {
        num_layers: 5,
        gamma: 5,
        period: 3,
        seed: 7,
        weight_mode: OWL_WEIGHTS_UNIFORM,
        weights: None,
    };
    let mut s = Sampler::new(&ctx, &cfg).expect("sampler");
    let first = s.step(0).expect("step 0");
    assert_eq!(first.mask, vec![1u8; 5]);
    assert_eq!(first.num_active, 5);
    assert!(first.resampled);
    let second = s.step(1).expect("step 1");
    assert_eq!(second.mask, vec![1u8; 5]);
    assert!(!second.resampled, "step 1 is inside the first period");
    assert!(s.step(3).unwrap().resampled, "step K starts a period");
}

#[test]
fn systematic_sampler_draws_exactly_gamma_layers() {
    let ctx = Context::cpu(1).expect("context");
    let cfg = SamplerConfig {
        num_layers: 6,
        gamma: 2,
        period: 1,
        seed: 11,
        weight_mode: OWL_WEIGHTS_CUSTOM,
        weights: Some(vec![1.0, 2.0, 3.0, 0.0, 5.0, 1.5]),
    };
    let mut s = Sampler::new(&ctx, &cfg).expect("sampler");
    for step in 0..20 {
        let st = s.step(step).unwrap();
        assert_eq!(st.num_active, 2);
        assert_eq!(st.mask.iter().map(|&x| x as u64).sum::<u64>(), 2);
        assert_eq!(st.mask[3], 0, "a zero-weight layer is never drawn");
    }
}

#[test]
fn errors_carry_the_status_and_the_library_message() {
    let ctx = Context::cpu(1).expect("context");
    let mut bad = galore_opts();
    bad.rank = 4; // > min(4, 3)
    let err = match Galore::new(&ctx, &bad) {
        Ok(_) => panic!("rank 4 on a 4x3 matrix was accepted"),
        Err(e) => e,
    };
    assert_eq!(err.status, 1);
    assert_eq!(err.name, "OWL_ERR_INVALID_ARGUMENT");
    assert!(err.message.contains("rank"), "message: {}", err.message);
    assert_eq!(err.message, ctx.last_error());
    assert!(err.to_string().starts_with("OWL_ERR_INVALID_ARGUMENT: "));
    assert_eq!(status_name(0), "OWL_OK");
    assert!(!status_string(3).is_empty());
}
