//! Shared by every crate of the workspace (`build = "../build.rs"`): libtorch lives in the project's venv, not in a
//! system path, so binaries, tests and benches get an rpath to it and run without `LD_LIBRARY_PATH`.
//! `DEP_TCH_LIBTORCH_LIB` is exported by torch-sys (`links = "tch"`) to crates that depend on it directly.
fn main() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    if let Ok(lib) = std::env::var("DEP_TCH_LIBTORCH_LIB") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{lib}");
    }
    // rustc links with --as-needed, which drops libtorch_cuda (nothing references it by symbol):
    // without it tch reports no CUDA device even on a GPU machine.
    if std::env::var_os("CARGO_FEATURE_CUDA").is_some() {
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
        println!("cargo:rustc-link-arg=-ltorch_cuda");
        println!("cargo:rustc-link-arg=-ltorch");
    }
}
