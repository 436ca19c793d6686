//! The `gsd-verdict` binary; everything is in [`gsd_verdict::cli`].

fn main() -> std::process::ExitCode {
    gsd_verdict::cli::main(std::env::args_os())
}
