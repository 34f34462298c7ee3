fn main() {
    engine::prepare_process();
    std::process::exit(recovery::cli::main());
}
