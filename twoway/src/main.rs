fn main() {
    engine::run::prepare_process();
    std::process::exit(twoway::cli::main());
}
