//! gsd-verdict, built in the test package (see Cargo.toml): the verdict the
//! chart's API-server test runs, never a stale build of another run.

fn main() -> std::process::ExitCode {
    gsd_verdict::cli::main(std::env::args_os())
}
