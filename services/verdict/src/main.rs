//! The `gsd-verdict` binary; everything is in [`gsd_verdict::cluster`]
//! (the in-cluster run) and [`gsd_verdict::offline`] (`gsd-verdict judge`).

fn main() -> std::process::ExitCode {
    gsd_verdict::cluster::main(std::env::args_os())
}
