//! The `fleetmesh` binary; everything lives in the library.

fn main() -> std::process::ExitCode {
    fleetmesh::cli::main()
}
