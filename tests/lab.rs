//! gsd-lab, built in the test package (see Cargo.toml): the binary the
//! tests start as servers, clients and rehearsals.

fn main() -> std::process::ExitCode {
    gsd_lab::cli::main(std::env::args_os())
}
