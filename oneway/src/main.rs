fn main() {
    engine::prepare_process();
    std::process::exit(oneway::cli::main());
}
