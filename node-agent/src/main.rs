//! `weir-agent`: the per-node agent of Weir (see the library's documentation for its layers).

fn main() -> anyhow::Result<()> {
    weir_agent::cli::main()
}
