fn main() {
    engine::run::prepare_process();
    std::process::exit(recovery::cli::main());
}
