//! The `gsd-server` binary; everything is in [`gsd_server::cli`].

fn main() -> anyhow::Result<()> {
    gsd_server::cli::main(std::env::args_os())
}
