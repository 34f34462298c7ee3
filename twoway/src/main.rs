fn main() {
    engine::prepare_process();
    std::process::exit(twoway::cli::main());
}
