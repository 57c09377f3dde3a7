//! Links libowlore the way any outside program does: through the installed
//! pkg-config file. PKG_CONFIG_PATH / PKG_CONFIG_SYSROOT_DIR pick a staged
//! install. Uses only std so that `cargo build --offline` needs no crates.
use std::process::Command;

fn main() {
    for var in ["PKG_CONFIG_PATH", "PKG_CONFIG_SYSROOT_DIR", "PKG_CONFIG_LIBDIR"] {
        println!("cargo:rerun-if-env-changed={}", var);
    }
    let output = Command::new("pkg-config")
        .args(["--libs", "owlore"])
        .output()
        .unwrap_or_else(|e| panic!("owlore-sys: cannot run pkg-config: {}", e));
    if !output.status.success() {
        panic!(
            "owlore-sys: `pkg-config --libs owlore` failed (is libowlore installed, \
             or PKG_CONFIG_PATH set?): {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let flags = String::from_utf8(output.stdout).expect("pkg-config printed non-UTF-8");
    for flag in flags.split_whitespace() {
        if let Some(dir) = flag.strip_prefix("-L") {
            println!("cargo:rustc-link-search=native={}", dir);
        } else if let Some(lib) = flag.strip_prefix("-l") {
            println!("cargo:rustc-link-lib=dylib={}", lib);
        } else if flag.starts_with("-Wl,") || flag == "-pthread" {
            println!("cargo:rustc-link-arg={}", flag);
        }
    }
}
