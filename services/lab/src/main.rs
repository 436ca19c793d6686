//! The `gsd-lab` binary: everything is in [`gsd_lab::cli`].

fn main() -> std::process::ExitCode {
    gsd_lab::cli::main(std::env::args_os())
}
