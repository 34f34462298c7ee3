fn main() {
    engine::run::prepare_process();
    std::process::exit(oneway::cli::main());
}
