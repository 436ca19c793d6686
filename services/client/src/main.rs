//! The `gsd-client` binary; everything is in [`gsd_client::cli`].

fn main() -> anyhow::Result<()> {
    gsd_client::cli::main(std::env::args_os())
}
