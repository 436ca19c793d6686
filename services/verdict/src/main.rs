//! The `gsd-verdict` binary; everything is in [`gsd_verdict::cluster`].

fn main() -> anyhow::Result<()> {
    gsd_verdict::cluster::main(std::env::args_os())
}
